"""The test cluster: a real Kubernetes control plane and node agents, on loopback.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are one binary built from
Go modules (`controlplane/`, `binary.py`), started by `controlplane.py` with certificates
from `pki.py`; the nodes are `agent/` processes. `make cluster` starts one under
.local/cluster for people; tests get one per session from `fixtures.py` and drive it
through `handle.py`.
"""
