"""Start and stop the test cluster: the real control plane plus one node agent per node.

    python -m tests.cluster up [--state-dir .local/cluster]    # make cluster
    python -m tests.cluster down [--state-dir .local/cluster]  # make cluster-down

Everything listens on 127.0.0.1 only, on ports picked at start and recorded in
`<state>/cluster.json`. etcd, kube-apiserver (Node,RBAC authorization; NodeRestriction and
the default admission chain with PodSecurity; service-account issuer and keys),
kube-controller-manager (every default controller, each with its own service account)
and kube-scheduler are the Kubernetes release pinned in tests/cluster/controlplane/go.mod.
The nodes are `tests.cluster.agent` processes (see its docstring for what they do and do
not do compared with a kubelet). Processes are supervised by devtools.supervisor: own
session, pid record, log under `<state>/`, the whole group stopped by `down`.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devtools import supervisor
from devtools.registry import free_port
from tests.cluster import binary, pki

START_TIMEOUT_S = 120
SERVICE_CIDR = "10.0.0.0/24"
ISSUER = "https://kubernetes.default.svc.cluster.local"
# Node health as the controller sees it: agents renew their Lease every 2 s, so a node
# that stops for NODE_GRACE_S is NotReady (kube-controller-manager's default is 50 s).
NODE_MONITOR_PERIOD_S = 2
NODE_GRACE_S = 12
COMPONENTS = ("etcd", "apiserver", "controller-manager", "scheduler")
# The NFS server and export named by deployments/kubernetes/shared-volume.yaml; the agents
# serve it from a directory (there is no kernel NFS here).
BUNDLE_NFS_EXPORT = "nfs.example.internal:/exports/multiarch"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    arch: str = "amd64"
    emulated: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    # Repositories an emulated node runs in this machine's architecture
    # (ImageStore.platform_arch); None: the builder's on an emulated node, else none.
    native_images: tuple[str, ...] | None = None


# The builder image's repository as `make builder` and the tests push it.
BUILDER_REPOSITORY = "multiarch/builder"
DEFAULT_NODES = (NodeSpec("node-amd64", "amd64"), NodeSpec("node-arm64", "arm64", emulated=True))


@dataclass
class NodeState:
    name: str
    arch: str
    emulated: bool
    kubelet_port: int
    control_port: int
    labels: dict[str, str]


@dataclass
class ClusterState:
    """What `up` started; written to `<state>/cluster.json` for `down` and the tests."""

    state_dir: str
    version: str
    api_port: int
    etcd_port: int
    nodes: list[NodeState]
    nfs_exports: dict[str, str]

    @property
    def kubeconfig(self) -> Path:
        return Path(self.state_dir) / "kubeconfig"

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def ca(self) -> Path:
        return Path(self.state_dir) / "pki" / "ca.crt"

    def save(self) -> None:
        path = Path(self.state_dir) / "cluster.json"
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, state_dir: Path) -> ClusterState:
        data = json.loads((state_dir / "cluster.json").read_text())
        data["nodes"] = [NodeState(**n) for n in data["nodes"]]
        return cls(**data)


def kubeconfig(path: Path, *, server: str, ca: Path, user: str, cert: Path | None = None,
               key: Path | None = None, token: str | None = None,
               namespace: str = "default") -> Path:
    """A kubeconfig for one identity (client certificate or bearer token)."""
    credentials: dict[str, str] = {}
    if cert is not None and key is not None:
        credentials = {"client-certificate": str(cert), "client-key": str(key)}
    if token is not None:
        credentials = {"token": token}
    path.write_text(json.dumps({
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server,
                                                   "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user,
                                                   "namespace": namespace}}],
    }, indent=2) + "\n")
    path.chmod(0o600)
    return path


def _api_ready(state: ClusterState, admin: pki.KeyPair) -> bool:
    context = ssl.create_default_context(cafile=str(state.ca))
    context.load_cert_chain(str(admin.cert), str(admin.key))
    try:
        with urllib.request.urlopen(f"{state.api_url}/readyz", context=context,
                                    timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _service(state_dir: Path, name: str, argv: Sequence[str], label: str, port: int | None,
             env: Mapping[str, str] | None = None) -> supervisor.Service:
    return supervisor.Service(name=name, argv=tuple(argv), state_dir=state_dir, label=label,
                              port=port, env=env)


def up(state_dir: Path, *, nodes: Sequence[NodeSpec] = DEFAULT_NODES,
       nfs_exports: Mapping[str, Path] | None = None) -> ClusterState:
    """Build the binary if needed, start everything, return once nodes are Ready."""
    state_dir = state_dir.resolve()
    if (state_dir / "cluster.json").exists():
        down(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    program = str(binary.ensure_binary(_state_root(state_dir)))
    pki_dir = state_dir / "pki"
    ca = pki.Authority(pki_dir)
    admin = pki.client_pair(ca, "admin", "kubernetes-admin", "system:masters")
    serving = pki.api_server_pair(ca)
    to_kubelets = pki.client_pair(ca, "apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                                  "system:masters")
    sa = pki.service_account_keys(pki_dir)
    exports = {k: str(Path(v).resolve()) for k, v in (nfs_exports or {
        BUNDLE_NFS_EXPORT: state_dir / "nfs"}).items()}
    state = ClusterState(
        state_dir=str(state_dir), version=binary.kubernetes_version(),
        api_port=free_port(), etcd_port=free_port(), nodes=[], nfs_exports=exports,
    )
    kubeconfig(state.kubeconfig, server=state.api_url, ca=state.ca, user="kubernetes-admin",
               cert=admin.cert, key=admin.key)
    state.save()
    peer_port = free_port()
    try:
        supervisor.start(_service(state_dir, "etcd", [
            program, "etcd", "--name", "test", "--data-dir", str(state_dir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{state.etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{state.etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"test=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync", "--log-level", "warn",
        ], "etcd", state.etcd_port), timeout_s=START_TIMEOUT_S)
        supervisor.start(_service(state_dir, "apiserver", [
            program, "apiserver",
            "--etcd-servers", f"http://127.0.0.1:{state.etcd_port}",
            "--bind-address", "127.0.0.1", "--secure-port", str(state.api_port),
            "--advertise-address", "127.0.0.1", "--endpoint-reconciler-type", "none",
            "--tls-cert-file", str(serving.cert), "--tls-private-key-file", str(serving.key),
            "--client-ca-file", str(state.ca),
            "--authorization-mode", "Node,RBAC",
            "--enable-admission-plugins", "NodeRestriction",
            "--allow-privileged=true",
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--service-account-issuer", ISSUER,
            "--service-account-key-file", str(sa.cert),
            "--service-account-signing-key-file", str(sa.key),
            "--kubelet-client-certificate", str(to_kubelets.cert),
            "--kubelet-client-key", str(to_kubelets.key),
            "--kubelet-certificate-authority", str(state.ca),
            "--kubelet-preferred-address-types", "InternalIP",
            "--cert-dir", str(state_dir / "apiserver-certs"),
            "--profiling=false",
            "--audit-policy-file", str(_audit_policy(state_dir)),
            "--audit-log-path", str(state_dir / "audit.log"), "--audit-log-format", "json",
        ], "kube-apiserver", state.api_port), timeout_s=START_TIMEOUT_S,
            ready=lambda: _api_ready(state, admin))
        supervisor.start(_service(state_dir, "controller-manager", [
            program, "controller-manager",
            *_client_flags(state, ca, "controller-manager", "system:kube-controller-manager"),
            "--use-service-account-credentials=true",
            "--service-account-private-key-file", str(sa.key),
            "--root-ca-file", str(state.ca), "--cluster-signing-cert-file", str(state.ca),
            "--cluster-signing-key-file", str(pki_dir / "ca.key"),
            "--controllers", "*",
            "--node-monitor-period", f"{NODE_MONITOR_PERIOD_S}s",
            "--node-monitor-grace-period", f"{NODE_GRACE_S}s",
        ], "kube-controller-manager", None), timeout_s=START_TIMEOUT_S)
        supervisor.start(_service(state_dir, "scheduler", [
            program, "scheduler",
            *_client_flags(state, ca, "scheduler", "system:kube-scheduler"),
        ], "kube-scheduler", None), timeout_s=START_TIMEOUT_S)
        for spec in nodes:
            start_node(state, ca, spec)
        wait_nodes_ready(state, [n.name for n in nodes])
    except BaseException:
        down(state_dir)
        raise
    return state


def _client_flags(state: ClusterState, ca: pki.Authority, name: str, user: str) -> list[str]:
    """What the controller-manager and the scheduler share: their own client certificate
    (the bootstrap RBAC policy binds the user), one kubeconfig for access and for
    delegated authentication/authorization, a loopback serving port, no leader election."""
    pair = pki.client_pair(ca, name, user)
    config = str(kubeconfig(Path(state.state_dir) / f"{name}.kubeconfig", server=state.api_url,
                            ca=state.ca, user=user, cert=pair.cert, key=pair.key))
    return ["--kubeconfig", config, "--authentication-kubeconfig", config,
            "--authorization-kubeconfig", config, "--bind-address", "127.0.0.1",
            "--secure-port", str(free_port()), "--leader-elect=false"]


def start_node(state: ClusterState, ca: pki.Authority, spec: NodeSpec) -> NodeState:
    """Start one node agent; it registers its Node and heartbeats on its own."""
    state_dir = Path(state.state_dir)
    client, serving = pki.node_pairs(ca, spec.name)
    node = NodeState(name=spec.name, arch=spec.arch, emulated=spec.emulated,
                     kubelet_port=free_port(), control_port=free_port(), labels=dict(spec.labels))
    argv = [sys.executable, "-m", "tests.cluster.agent", "--node", spec.name, "--arch", spec.arch,
            "--api", state.api_url, "--ca", str(state.ca), "--cert", str(client.cert),
            "--key", str(client.key), "--serving-cert", str(serving.cert),
            "--serving-key", str(serving.key), "--port", str(node.kubelet_port),
            "--control-port", str(node.control_port), "--state-dir",
            str(state_dir / "nodes" / spec.name),
            "--node-status-grace-s", str(NODE_GRACE_S)]
    if spec.emulated:
        argv.append("--emulated")
    native = spec.native_images
    for repository in (BUILDER_REPOSITORY,) if native is None and spec.emulated else native or ():
        argv += ["--native-image", repository]
    for key, value in spec.labels.items():
        argv += ["--label", f"{key}={value}"]
    for export, directory in state.nfs_exports.items():
        argv += ["--nfs-export", f"{export}={directory}"]
    supervisor.start(_service(state_dir, f"node-{spec.name}", argv,
                              f"the node agent {spec.name}", node.control_port,
                              env={**os.environ, "PYTHONPATH": str(binary.REPO_ROOT)}),
                     timeout_s=START_TIMEOUT_S)
    state.nodes = [n for n in state.nodes if n.name != spec.name] + [node]
    state.save()
    return node


def stop_node(state: ClusterState, name: str) -> None:
    supervisor.stop(name=f"node-{name}", state_dir=Path(state.state_dir))


def wait_nodes_ready(state: ClusterState, names: Sequence[str], *,
                     timeout_s: float = START_TIMEOUT_S) -> None:
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(str(state.kubeconfig)))
    deadline = time.monotonic() + timeout_s
    waiting = set(names)
    while waiting:
        for node in api.list_node().items:
            ready = [c for c in node.status.conditions or [] if c.type == "Ready"]
            if ready and ready[0].status == "True":
                waiting.discard(node.metadata.name)
        if waiting and time.monotonic() > deadline:
            raise TimeoutError(f"nodes never became Ready: {sorted(waiting)}")
        time.sleep(0.3)


def down(state_dir: Path) -> None:
    """Stop every process recorded under `state_dir` (agents first), remove the state but
    keep the binary."""
    state_dir = state_dir.resolve()
    names = [p.stem for p in state_dir.glob("node-*.pid")] + list(reversed(COMPONENTS))
    for name in names:
        supervisor.stop(name=name, state_dir=state_dir)
    if state_dir.exists():
        shutil.rmtree(state_dir, ignore_errors=True)


def _audit_policy(state_dir: Path) -> Path:
    """Record each Job as its client sent it (tests assert on what the runner created)."""
    path = state_dir / "audit-policy.json"
    path.write_text(json.dumps({
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            {"level": "Request", "verbs": ["create"],
             "resources": [{"group": "batch", "resources": ["jobs"]}]},
            {"level": "None"},
        ],
    }))
    return path


def _state_root(state_dir: Path) -> Path:
    """Where the binary is cached: the repository's .local/ (kept across clusters)."""
    return binary.REPO_ROOT / ".local"
