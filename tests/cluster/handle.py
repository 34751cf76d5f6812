"""The test cluster as tests use it: kubeconfigs, state to assert on, and failure hooks.

State is read from the real API server with the admin identity; what the runner sent is
read from the API server's audit log (`created_jobs`), and failures a node can have are
injected through each agent's loopback control port (see agent/server.py).
"""

from __future__ import annotations

import base64
import datetime
import json
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client, config

from tests.cluster import controlplane
from tests.cluster.controlplane import ClusterState, NodeSpec, NodeState

T = TypeVar("T")
Obj = dict[str, Any]
REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "deployments" / "kubernetes"
NAMESPACE = "multiarch"
SERVICE_ACCOUNT = "multiarch-builder"


class Cluster:
    """A running test cluster (see `fixtures.py` for how tests get one)."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.namespace = NAMESPACE
        self.test_started = 0.0  # created_jobs() looks no further back (set per test)
        self.builder_image = ""  # what build and publish pods run (the kube_builder fixture)
        self.admin_kubeconfig = state.kubeconfig
        self.kubeconfig = Path(state.state_dir) / "runner.kubeconfig"
        self.api_client = config.new_client_from_config(str(self.admin_kubeconfig))
        self.core = client.CoreV1Api(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)

    # --- set-up --------------------------------------------------------------------

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(controlplane.binary.kubectl_path()), "--kubeconfig",
                str(self.admin_kubeconfig), *args]
        return subprocess.run(argv, capture_output=True, text=True, check=check)

    def apply_bundle(self) -> None:
        """deployments/kubernetes exactly as a user applies it."""
        result = self.kubectl("apply", "-k", str(BUNDLE), check=False)
        if result.returncode != 0:
            raise RuntimeError(f"kubectl apply -k deployments/kubernetes failed:\n{result.stderr}")

    def runner_token(self, *, account: str = SERVICE_ACCOUNT, seconds: int = 7200) -> str:
        """A token of the bundle's ServiceAccount (TokenRequest), as a flow-run pod has."""
        self.wait_for(lambda: self._account_exists(account), what=f"ServiceAccount {account}")
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds))
        answer = self.core.create_namespaced_service_account_token(account, self.namespace,
                                                                   request)
        return answer.status.token

    def _account_exists(self, account: str) -> bool:
        return any(a.metadata.name == account for a in
                   self.core.list_namespaced_service_account(self.namespace).items)

    def write_runner_kubeconfig(self, path: Path | None = None, *,
                                account: str = SERVICE_ACCOUNT) -> Path:
        return controlplane.kubeconfig(path or self.kubeconfig, server=self.state.api_url,
                                       ca=self.state.ca, user=account,
                                       token=self.runner_token(account=account),
                                       namespace=self.namespace)

    # --- state -----------------------------------------------------------------------

    def _dicts(self, items: list[Any]) -> list[Obj]:
        return [self.api_client.sanitize_for_serialization(i) for i in items]

    def jobs(self) -> list[Obj]:
        return self._dicts(self.batch.list_namespaced_job(self.namespace).items)

    def pods(self) -> list[Obj]:
        return self._dicts(self.core.list_namespaced_pod(self.namespace).items)

    def nodes(self) -> list[Obj]:
        return self._dicts(self.core.list_node().items)

    def events(self, *, involved: str | None = None) -> list[Obj]:
        found = self._dicts(self.core.list_namespaced_event(self.namespace).items)
        return [e for e in found if involved in (None, e["involvedObject"]["name"])]

    def pod_log(self, pod: str, container: str) -> str:
        return self.core.read_namespaced_pod_log(pod, self.namespace, container=container)

    def created_jobs(self, *, since: float | None = None) -> list[Obj]:
        """Each Job a client created, from the API server's audit log: the request as the
        server decoded it (the client's fields, with the API's defaults filled in)."""
        since = self.test_started if since is None else since
        bodies = []
        log = Path(self.state.state_dir) / "audit.log"
        for line in log.read_text().splitlines() if log.exists() else []:
            entry = json.loads(line)
            if (entry.get("verb") == "create" and entry.get("stage") == "ResponseComplete"
                    and (entry.get("objectRef") or {}).get("resource") == "jobs"
                    and entry.get("requestObject")
                    and _epoch(entry["requestReceivedTimestamp"]) >= since):
                bodies.append(entry["requestObject"])
        return bodies

    def create_secret(self, name: str, *, type: str = "Opaque",
                      data: Mapping[str, str | bytes]) -> Obj:
        encoded = {k: base64.b64encode(v.encode() if isinstance(v, str) else v).decode()
                   for k, v in data.items()}
        body = client.V1Secret(metadata=client.V1ObjectMeta(name=name), type=type, data=encoded)
        return self.api_client.sanitize_for_serialization(
            self.core.create_namespaced_secret(self.namespace, body))

    def delete_secret(self, name: str) -> None:
        self.core.delete_namespaced_secret(name, self.namespace)

    def create_config_map(self, name: str, *, data: Mapping[str, str]) -> Obj:
        body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data=dict(data))
        return self.api_client.sanitize_for_serialization(
            self.core.create_namespaced_config_map(self.namespace, body))

    def delete_config_map(self, name: str) -> None:
        self.core.delete_namespaced_config_map(name, self.namespace)

    def wait_for(self, condition: Callable[[], T], *, timeout: float = 30,
                 what: str = "condition") -> T:
        deadline = time.monotonic() + timeout
        while True:
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.2)

    # --- nodes and failure hooks ------------------------------------------------------

    def node(self, name: str) -> NodeState:
        return next(n for n in self.state.nodes if n.name == name)

    def _control(self, node: NodeState, method: str, path: str, body: Any = None) -> Obj:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{node.control_port}{path}",
                                         data=data, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def _node_of(self, pod: str) -> NodeState:
        found = self.core.read_namespaced_pod(pod, self.namespace)
        return self.node(found.spec.node_name)

    def evict(self, pod: str) -> None:
        self._control(self._node_of(pod), "POST", f"/evict?pod={self.namespace}/{pod}")

    def oom_kill(self, pod: str, container: str | None = None) -> None:
        query = f"/oom-kill?pod={self.namespace}/{pod}"
        self._control(self._node_of(pod), "POST",
                      query + (f"&container={container}" if container else ""))

    def set_oom_containers(self, names: set[str]) -> None:
        for node in self.state.nodes:
            self._control(node, "PUT", "/oom-containers", sorted(names))

    def drop_log_stream_once(self, *, after_lines: int) -> None:
        """The next follow stream that has sent `after_lines` lines loses its connection."""
        for node in self.state.nodes:
            self._control(node, "POST", f"/drop-log-stream?after={after_lines}")

    @property
    def dropped_log_streams(self) -> int:
        return sum(self._control(n, "GET", "/state")["dropped"] for n in self.state.nodes)

    @property
    def agent_errors(self) -> list[str]:
        return [e for n in self.state.nodes for e in self._control(n, "GET", "/state")["errors"]]

    def pause_heartbeat(self, name: str, *, paused: bool = True) -> None:
        """The node stops (or resumes) renewing its Lease and Ready condition; its pods
        keep running (a network partition, as the control plane sees it)."""
        self._control(self.node(name), "POST",
                      f"/heartbeat?paused={'true' if paused else 'false'}")

    def lose_node(self, name: str) -> None:
        """Power the node off: its processes die, it stops heartbeating and reporting."""
        self._control(self.node(name), "POST", "/lose")

    def add_node(self, spec: NodeSpec) -> NodeState:
        from tests.cluster import pki

        ca = pki.Authority(Path(self.state.state_dir) / "pki")
        node = controlplane.start_node(self.state, ca, spec)
        controlplane.wait_nodes_ready(self.state, [spec.name])
        return node

    def remove_node(self, name: str) -> None:
        """Stop the agent and delete its Node (kubectl delete node)."""
        controlplane.stop_node(self.state, name)
        self.state.nodes = [n for n in self.state.nodes if n.name != name]
        self.state.save()
        self.core.delete_node(name)

    def reset_hooks(self) -> None:
        self.set_oom_containers(set())


def _epoch(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
