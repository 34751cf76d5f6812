"""A lost node, decided from the pod (and the Node when readable), shaped like Kubernetes 1.36."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from multiarch.runners.kubernetes.diagnostics import Verdict
from multiarch.runners.kubernetes.manifests import ANNOTATION_EMULATED
from multiarch.runners.kubernetes.nodes import (
    diagnose_node_loss,
    node_emulates,
    node_not_ready,
)

NOW = datetime(2026, 11, 29, 8, 10, tzinfo=UTC)


def stamp(delta_s: float) -> str:
    return (NOW + timedelta(seconds=delta_s)).strftime("%Y-%m-%dT%H:%M:%SZ")


def running_pod(*, deletion=None, conditions=None):
    """A build pod on arm64-b as the API server returns it (kubectl get -o json)."""
    metadata = {"name": "hello-linux-arm64-x7k2p-abcde", "namespace": "multiarch",
                "labels": {"job-name": "hello-linux-arm64-x7k2p"}}
    if deletion is not None:
        metadata.update(deletionTimestamp=deletion, deletionGracePeriodSeconds=30)
    return {
        "metadata": metadata,
        "spec": {"nodeName": "arm64-b", "nodeSelector": {"kubernetes.io/arch": "arm64"},
                 "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                                  "effect": "NoExecute", "tolerationSeconds": 20}]},
        "status": {
            "phase": "Running", "hostIP": "10.0.0.12", "podIP": "10.244.1.7",
            "conditions": conditions if conditions is not None else [
                {"type": "PodReadyToStartContainers", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "True"},
                {"type": "ContainersReady", "status": "True"},
                {"type": "PodScheduled", "status": "True"},
            ],
            "containerStatuses": [{"name": "export", "ready": True, "restartCount": 0,
                                   "state": {"running": {"startedAt": stamp(-300)}}}],
        },
    }


TAINT_MANAGER_CONDITIONS = [
    {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
     "message": "Taint manager: deleting due to NoExecute taint",
     "lastTransitionTime": stamp(-5)},
    {"type": "PodReadyToStartContainers", "status": "True"},
    {"type": "Initialized", "status": "True"},
    {"type": "Ready", "status": "False", "lastTransitionTime": stamp(-25)},
    {"type": "ContainersReady", "status": "True"},
    {"type": "PodScheduled", "status": "True"},
]


def node(ready="True", reason="KubeletReady", emulated=None):
    annotations = {"node.alpha.kubernetes.io/ttl": "0"}
    if emulated is not None:
        annotations[ANNOTATION_EMULATED] = emulated
    return {"metadata": {"name": "arm64-b", "annotations": annotations,
                         "labels": {"kubernetes.io/arch": "arm64", "kubernetes.io/os": "linux"}},
            "status": {"conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": ready, "reason": reason}]}}


def test_pod_deleted_by_the_taint_manager_is_retried_elsewhere_without_reading_the_node():
    pod = running_pod(deletion=stamp(25), conditions=TAINT_MANAGER_CONDITIONS)
    d = diagnose_node_loss(pod, None, now=NOW)
    assert d is not None and d.verdict == Verdict.TRANSIENT
    assert "node arm64-b not ready" in d.message
    assert "DeletionByTaintManager" in d.message
    assert "retrying on another node" in d.message


def test_node_ready_unknown_is_enough_when_the_node_can_be_read():
    silent = node("Unknown", "NodeStatusUnknown")
    assert node_not_ready(silent) == "Unknown (NodeStatusUnknown)"
    d = diagnose_node_loss(running_pod(), silent, now=NOW)
    assert d is not None and d.verdict == Verdict.TRANSIENT and "NodeStatusUnknown" in d.message


def test_a_deleted_pod_still_running_past_its_grace_means_its_node_is_gone():
    pod = running_pod(deletion=stamp(-60))  # no condition says why: a plain delete
    d = diagnose_node_loss(pod, None, now=NOW)
    assert d is not None and "past its deletion grace period" in d.message
    assert diagnose_node_loss(running_pod(deletion=stamp(20)), None, now=NOW) is None


def test_healthy_pods_and_finished_pods_are_left_to_diagnose_pod():
    assert diagnose_node_loss(running_pod(), node(), now=NOW) is None
    assert diagnose_node_loss(running_pod(), None, now=NOW) is None
    finished = running_pod(deletion=stamp(-60), conditions=TAINT_MANAGER_CONDITIONS)
    finished["status"]["phase"] = "Failed"
    assert diagnose_node_loss(finished, node("Unknown"), now=NOW) is None


def test_emulated_comes_from_the_node_annotation():
    assert node_emulates(node(emulated="true"))
    assert not node_emulates(node(emulated="false"))
    assert not node_emulates(node())
    assert not node_emulates(None)  # nodes get forbidden: no ClusterRole


def test_an_eviction_in_progress_is_transient_without_blaming_the_node():
    evicting = [{"type": "DisruptionTarget", "status": "True",
                 "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"},
                {"type": "Ready", "status": "True"}]
    d = diagnose_node_loss(running_pod(deletion=stamp(30), conditions=evicting), node(), now=NOW)
    assert d is not None and d.verdict == Verdict.TRANSIENT
    assert "being disrupted on arm64-b (EvictionByEvictionAPI)" in d.message
    assert "not ready" not in d.message
