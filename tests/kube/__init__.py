"""The test cluster: a Kubernetes API (kmock-based) and a node agent running pods for real.

No control plane can run on this machine, so the Kubernetes runner is tested against
this emulation at our boundary: the official client talks HTTP to `apiserver.py`, and
`agent.py` plays the Job controller, garbage collector, scheduler and a kubelet per node,
running each container's argv as a host process in a private mount namespace
(`launch.py`) with its volumes bound at the in-pod paths. Start it with
`cluster.start_fake_cluster` or the `kube_cluster` fixture (`fixtures.py`).

Reproduced (Kubernetes 1.31 behaviour): generateName, uid, resourceVersion,
creationTimestamp, 201/404/409/422 Status errors, label and field selectors, list
limit/continue, watches (ADDED/MODIFIED/DELETED, from a resourceVersion, timeoutSeconds),
PATCH/PUT incl. the status subresource, finalizers and Background/Foreground/Orphan
propagation (Orphan is the batch/v1 default), Job status and conditions
(SuccessCriteriaMet/Complete, FailureTarget/Failed with BackoffLimitExceeded or
DeadlineExceeded), backoffLimit retries, ttlSecondsAfterFinished, nodeSelector/affinity/
taints with the scheduler's messages and FailedScheduling events, the kubelet's pod and
container statuses, init containers in order, `$(VAR)` expansion, termination messages,
StartError, image pull back-off, OOMKilled, eviction, node loss with pod GC, graceful
deletion, pod logs (follow, timestamps, sinceTime/sinceSeconds, tailLines, limitBytes).

Not reproduced: container images (the host's filesystem is every container's root, so
writes outside volumes land on the host; arm64 pods run on this amd64 host), restarts
and probes, resources and limits, the pod-level network, service accounts and RBAC,
admission beyond the checks in `admission.py`, strategic merge by list keys (treated as
a JSON merge patch), deletecollection, bookmarks and 410 Gone, parallelism/completions
above 1 and stopping a running pod on suspend, and real time scales (no retry backoff,
no node grace periods).
"""
