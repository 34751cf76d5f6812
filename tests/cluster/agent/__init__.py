"""The test cluster's node agent: what stands in for a kubelet with a container runtime.

A kubelet needs a container runtime (containerd, CRI-O) and cgroup/namespace privileges
that this machine's sandbox does not give, so each test node is this agent, at our own
boundary with the real control plane. It talks to the real kube-apiserver as
`system:node:<name>` (Node authorizer, NodeRestriction) and does, like a kubelet:

- registers its Node (arch/os/hostname labels, addresses, capacity, nodeInfo, the
  kubelet endpoint's port; `multiarch.dev/emulated: "true"` on a node whose containers
  run under QEMU) and heartbeats with a Lease plus the Ready condition (`node.py`);
- lists and watches the pods the scheduler bound to it, sets up their volumes (emptyDir,
  hostPath, Secret and ConfigMap read as the node, a PersistentVolumeClaim's bound
  PersistentVolume, the projected service-account volume with a bound token from the
  TokenRequest API) and runs init containers in order, then the containers, each as a
  process tree in a private mount namespace with its volumes at the in-pod paths, its
  own session and cgroup (`kubelet.py`, `runtime.py`, `launch.py`, `volumes.py`);
- reports pod status through the status subresource with the kubelet's phases,
  conditions, container states, reasons and termination messages (`podstatus.py`),
  records the kubelet's events (`events.py`), stops a pod marked for deletion (SIGTERM,
  grace, SIGKILL) and then deletes it with grace 0;
- serves `/containerLogs/...` over HTTPS with client-certificate authentication, so
  `pods/log` goes through the API server's proxy (`server.py`, `logs.py`).

It does NOT: run images (the host's filesystem is every image, plus the checkout at the
builder image's WORKDIR /opt/multiarch-builder, read-only; issue 11 changes that),
enforce resource limits (a test hook stands in for the OOM killer), restart containers
(restartPolicy Always/OnFailure run once), run probes, give pods their own network (all
share the host's; KUBERNETES_SERVICE_HOST is 127.0.0.1), mount NFS (an NFS
PersistentVolume is served from a directory given per export), serve exec/attach/port-
forward, evict on real resource pressure (a test hook does), or run static pods. Test
hooks (evict, OOM-kill, unpullable images, a dropped log stream, a lost node) are on a
separate loopback control port.
"""
