"""The test cluster itself: what the runner's tests rely on, checked against the real
control plane (so a gap in the node agent cannot pass as a runner's success)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from multiarch.runners.kubernetes.manifests import ANNOTATION_EMULATED
from tests.cluster import binary
from tests.cluster.handle import Cluster
from tests.sessions import Playground

pytestmark = pytest.mark.integration


def job(name: str, script: str, *, image: str, arch: str = "amd64",
        namespace: str = "multiarch", privileged: bool = False) -> dict:
    container: dict = {"name": "main", "image": image, "command": ["sh", "-c", script]}
    if privileged:
        container["securityContext"] = {"privileged": True}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 5,
            "template": {"spec": {"restartPolicy": "Never",
                                  "nodeSelector": {"kubernetes.io/arch": arch},
                                  "containers": [container]}},
        },
    }


def delete_job(cluster: Cluster, name: str) -> None:
    cluster.batch.delete_namespaced_job(name, cluster.namespace,
                                        propagation_policy="Background")
    cluster.wait_for(lambda: not [p for p in cluster.pods()
                                  if p["metadata"]["labels"].get("job-name") == name],
                     what=f"pods of {name} to go")


def test_nodes_register_with_their_architecture_and_heartbeat(kube_cluster: Cluster) -> None:
    nodes = {n["metadata"]["name"]: n for n in kube_cluster.nodes()}
    assert {"node-amd64", "node-arm64"} <= set(nodes)
    for name, arch in (("node-amd64", "amd64"), ("node-arm64", "arm64")):
        labels = nodes[name]["metadata"]["labels"]
        assert labels["kubernetes.io/arch"] == arch
        assert labels["kubernetes.io/os"] == "linux"
        ready = next(c for c in nodes[name]["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"
    annotations = nodes["node-arm64"]["metadata"]["annotations"]
    assert annotations.get(ANNOTATION_EMULATED) == "true"
    assert ANNOTATION_EMULATED not in nodes["node-amd64"]["metadata"]["annotations"]
    leases = client.CoordinationV1Api(kube_cluster.api_client)
    first = leases.read_namespaced_lease("node-amd64", "kube-node-lease").spec.renew_time
    kube_cluster.wait_for(
        lambda: leases.read_namespaced_lease("node-amd64", "kube-node-lease").spec.renew_time
        > first, what="the Lease to be renewed")


def test_the_scheduler_places_jobs_by_architecture_and_logs_follow_through_the_api_server(
    kube_cluster: Cluster, playground: Playground,
) -> None:
    """`kubectl logs -f` goes API server -> the agent's kubelet endpoint (client certs both
    ways) and streams lines as the container writes them."""
    name = "hello-arm64"
    kube_cluster.batch.create_namespaced_job(kube_cluster.namespace, job(
        name, "for i in 1 2 3; do echo line-$i; sleep 1; done", image=playground.base,
        arch="arm64"))
    try:
        pod = kube_cluster.wait_for(
            lambda: next((p for p in kube_cluster.pods()
                          if p["metadata"]["labels"].get("job-name") == name
                          and p["status"].get("phase") == "Running"), None),
            what="the pod to run")
        assert pod["spec"]["nodeName"] == "node-arm64"
        received: list[tuple[float, str]] = []
        follow = subprocess.Popen(
            [str(binary.kubectl_path()),
             "--kubeconfig", str(kube_cluster.admin_kubeconfig), "-n", kube_cluster.namespace,
             "logs", "-f", pod["metadata"]["name"]],
            stdout=subprocess.PIPE, text=True)
        assert follow.stdout is not None
        for line in follow.stdout:
            received.append((time.monotonic(), line.strip()))
        assert follow.wait(timeout=30) == 0
        assert [text for _, text in received] == ["line-1", "line-2", "line-3"]
        assert received[-1][0] - received[0][0] > 1, "lines arrived all at once, not followed"
        done = kube_cluster.wait_for(
            lambda: kube_cluster.batch.read_namespaced_job(name, kube_cluster.namespace)
            .status.succeeded, what="the Job to complete")
        assert done == 1
    finally:
        delete_job(kube_cluster, name)


def test_a_silent_node_is_marked_not_ready_and_tainted_by_the_controller(
    kube_cluster: Cluster,
) -> None:
    def ready_and_taints() -> tuple[str, set[str]]:
        node = kube_cluster.core.read_node("node-amd64")
        ready = next(c.status for c in node.status.conditions if c.type == "Ready")
        return ready, {t.key for t in node.spec.taints or []}

    kube_cluster.pause_heartbeat("node-amd64")
    try:
        kube_cluster.wait_for(lambda: ready_and_taints()[0] == "Unknown", timeout=60,
                              what="node-amd64 to be NotReady")
        kube_cluster.wait_for(lambda: "node.kubernetes.io/unreachable" in ready_and_taints()[1],
                              timeout=30, what="the unreachable taint")
    finally:
        kube_cluster.pause_heartbeat("node-amd64", paused=False)
    kube_cluster.wait_for(lambda: ready_and_taints() == ("True", set()), timeout=60,
                          what="node-amd64 to be Ready and untainted again")


def test_a_node_may_read_only_the_secrets_of_its_own_pods(kube_cluster: Cluster) -> None:
    """The Node authorizer is real: the agents' identity (system:node:<name>) is refused a
    Secret that no pod bound to it references."""
    kube_cluster.create_secret("not-for-nodes", data={"k": "v"})
    try:
        pki = Path(kube_cluster.state.state_dir) / "pki"
        configuration = client.Configuration()
        configuration.host = kube_cluster.state.api_url
        configuration.ssl_ca_cert = str(pki / "ca.crt")
        configuration.cert_file = str(pki / "node-node-amd64.crt")
        configuration.key_file = str(pki / "node-node-amd64.key")
        as_node = client.CoreV1Api(client.ApiClient(configuration))
        with pytest.raises(ApiException) as refused:
            as_node.read_namespaced_secret("not-for-nodes", kube_cluster.namespace)
        assert refused.value.status == 403
        assert "no relationship found between node 'node-amd64'" in refused.value.body
    finally:
        kube_cluster.delete_secret("not-for-nodes")


def test_pod_security_admission_refuses_privileged_pods_in_a_baseline_namespace(
    kube_cluster: Cluster,
) -> None:
    namespace = "baseline-check"
    kube_cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=namespace, labels={"pod-security.kubernetes.io/enforce": "baseline"})))
    try:
        pod = job("priv", "true", image="busybox", namespace=namespace,
                  privileged=True)["spec"]["template"]
        pod["metadata"] = {"name": "priv"}
        with pytest.raises(ApiException) as refused:
            kube_cluster.core.create_namespaced_pod(namespace, {"apiVersion": "v1",
                                                                "kind": "Pod", **pod})
        assert refused.value.status == 403
        message = json.loads(refused.value.body)["message"]
        assert 'violates PodSecurity "baseline:latest"' in message
        assert "privileged" in message
    finally:
        kube_cluster.core.delete_namespace(namespace)


def test_make_cluster_twice_reuses_the_binary_and_down_leaves_nothing(tmp_path: Path) -> None:
    """`python -m tests.cluster up|down` is what `make cluster`/`cluster-down` run."""
    state = tmp_path / "cluster"
    built = binary.binary_path(binary.REPO_ROOT / ".local")
    for _ in range(2):
        up = subprocess.run([sys.executable, "-m", "tests.cluster", "up", "--state-dir",
                             str(state)], cwd=binary.REPO_ROOT, capture_output=True,
                            text=True, timeout=300)
        assert up.returncode == 0, up.stderr
        assert "building the Kubernetes" not in up.stderr
        assert built.exists()
        assert "export KUBECONFIG=" in up.stdout
        nodes = config.new_client_from_config(str(state / "kubeconfig"))
        names = {n.metadata.name for n in client.CoreV1Api(nodes).list_node().items}
        assert names == {"node-amd64", "node-arm64"}
        down = subprocess.run([sys.executable, "-m", "tests.cluster", "down", "--state-dir",
                               str(state)], cwd=binary.REPO_ROOT, capture_output=True,
                              text=True, timeout=120)
        assert down.returncode == 0, down.stderr
        assert not state.exists()
    left = [p.name for p in Path("/proc").iterdir() if p.name.isdigit()
            and str(state).encode() in _cmdline(p)]
    assert left == [], f"processes left behind: {left}"


def _cmdline(process: Path) -> bytes:
    try:
        return (process / "cmdline").read_bytes()
    except OSError:
        return b""
