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
  TokenRequest API) and runs init containers in order, then the containers, each in its
  image as a process tree with its own session and cgroup (`kubelet.py`, `runtime.py`,
  `launch.py`, `volumes.py`);
- pulls images like containerd (`images.py`): the reference resolved with skopeo to
  this node's platform manifest (linux/amd64, linux/arm64), fetched by digest and
  unpacked once with umoci into a cache keyed by digest, shared by the agents of the
  machine under file locks and bounded by size (least recently used dropped), under
  <repo>/.local/agent-images/ so it survives test sessions; imagePullPolicy Always /
  IfNotPresent / Never, imagePullSecrets (read as the node, a 0600 auth file deleted
  after the pull; an image pulled with credentials is "present" only for pods holding
  them, as with the 1.36 kubelet's KubeletEnsureSecretPulledImages), ErrImagePull ->
  ImagePullBackOff with a doubling back-off (2 s to 30 s here; the kubelet's 10 s to
  300 s), ErrImageNeverPull, the kubelet's events and `imageID` repo@sha256:...;
  plain http for registries on 127.0.0.1/localhost only;
- runs a container in its image (`launch.py`): in a private mount namespace, an overlay
  of the cached root filesystem with the container's writable layer under the pod's
  state (removed with the pod), /proc, /dev (privileged: the host's; otherwise null,
  zero, full, random, urandom, tty, shm, pts, no /dev/fuse), /sys read-only, the
  volumes at their paths, /etc/hosts and /etc/hostname generated, the host's
  /etc/resolv.conf, then pivot_root and exec with Kubernetes' rules for ENTRYPOINT/CMD,
  Env and WorkingDir; an arm64 image runs under QEMU through binfmt_misc (F flag). All
  mounts live in that namespace only, so a killed agent leaves none on the host;
- with one exception on an emulated node: buildah's RUN steps cannot run under QEMU
  user emulation, because buildah re-executes itself there (Debian's QEMU 7.2: "fork/exec
  /proc/self/exe: permission denied"; QEMU 10.0 from bookworm-backports gets one step
  further, then "Error during reexec(...): No such file or directory"), so the emulated
  arm64 node runs the builder image's linux/amd64
  variant (`--native-image multiarch/builder`) and buildah emulates only the RUN steps
  for linux/arm64, as the local runner does. A real arm64 node runs the arm64 variant;
  that variant's tools are checked by `make builder`'s tests, not by pods here;
- reports pod status through the status subresource with the kubelet's phases,
  conditions, container states, reasons and termination messages (`podstatus.py`),
  records the kubelet's events (`events.py`), stops a pod marked for deletion (SIGTERM,
  grace, SIGKILL) and then deletes it with grace 0;
- serves `/containerLogs/...` over HTTPS with client-certificate authentication, so
  `pods/log` goes through the API server's proxy (`server.py`, `logs.py`).

It does NOT: isolate like runc (containers run as root with every capability, no
seccomp, no user/PID/IPC namespace, the image's USER ignored; the host's processes are
visible in /proc), verify layer digests beyond what skopeo does, garbage-collect by disk
pressure (a size bound instead), report Node.status.images, enforce resource limits (a
test hook stands in for the OOM killer), restart containers
(restartPolicy Always/OnFailure run once), run probes, give pods their own network (all
share the host's; KUBERNETES_SERVICE_HOST is 127.0.0.1), mount NFS (an NFS
PersistentVolume is served from a directory given per export), serve exec/attach/port-
forward, evict on real resource pressure (a test hook does), or run static pods. Test
hooks (evict, OOM-kill, a dropped log stream, a lost node) are on a separate loopback
control port.
"""
