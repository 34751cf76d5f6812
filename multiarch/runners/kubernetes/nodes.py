"""The node under a build pod: is it lost, and does it emulate? Pure, tested on dicts.

A node that stops heartbeating does not end its pods: the node lifecycle controller marks
the node Ready=Unknown and the pods Ready=False, the taint manager later deletes them
(deletionTimestamp set, DisruptionTarget reason DeletionByTaintManager), but nobody is
left to stop the containers, so the pod stays Running until pod GC force-deletes it (if
ever). Waiting for a Failed phase therefore hangs the build. We decide from what the API
server shows: the pod marked for deletion by the cluster, a pod marked for deletion still
running past its grace period, or (when we may read Nodes, which takes a ClusterRole) its
node's Ready condition not True. The build is transient: Prefect retries it and the
scheduler places the new pod on a healthy node.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from multiarch.runners.kubernetes.diagnostics import Diagnosis, Verdict
from multiarch.runners.kubernetes.manifests import ANNOTATION_EMULATED

DELETION_SLACK = timedelta(seconds=30)  # past deletionTimestamp + this, the node is not acting
NODE_LOSS_REASONS = frozenset({"NodeLost", "DeletionByTaintManager", "DeletionByPodGC"})


def node_emulates(node: Mapping[str, Any] | None) -> bool:
    """The node's own word; an unreadable node (403: no ClusterRole) counts as native."""
    annotations = ((node or {}).get("metadata") or {}).get("annotations") or {}
    return annotations.get(ANNOTATION_EMULATED) == "true"


def node_not_ready(node: Mapping[str, Any] | None) -> str | None:
    """`Unknown`/`False` (with the condition's reason) when the node is not Ready; None when
    it is Ready or cannot be read."""
    for condition in ((node or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") != "True":
            reason = condition.get("reason") or condition.get("status", "Unknown")
            return f"{condition.get('status', 'Unknown')} ({reason})"
    return None


def diagnose_node_loss(pod: Mapping[str, Any], node: Mapping[str, Any] | None, *,
                       now: datetime) -> Diagnosis | None:
    """TRANSIENT when the pod's node is lost (or the cluster is taking the pod away);
    None while nothing says so."""
    status, metadata = pod.get("status") or {}, pod.get("metadata") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return None  # diagnose_pod decides terminal pods
    node_name = (pod.get("spec") or {}).get("nodeName") or "its node"
    not_ready = node_not_ready(node)
    if not_ready is not None:
        return _lost(pod, node_name, f"Ready {not_ready}")
    deleting = _timestamp(metadata.get("deletionTimestamp"))
    if deleting is None:
        return None
    reason, disruption = status.get("reason"), _disruption_reason(status)
    if reason in NODE_LOSS_REASONS or disruption in NODE_LOSS_REASONS:
        return _lost(pod, node_name, f"pod marked {reason or disruption}")
    if disruption is not None:  # eviction API, preemption, kubelet: the node is fine
        return Diagnosis(verdict=Verdict.TRANSIENT,
                         summary=f"pod {metadata.get('name')} is being disrupted on "
                                 f"{node_name} ({disruption})",
                         resolution="retrying on another attempt")
    if now > deleting + DELETION_SLACK:
        return _lost(pod, node_name, f"pod still {status.get('phase', 'Pending')} past its "
                                     "deletion grace period")
    return None


def _lost(pod: Mapping[str, Any], node_name: str, why: str) -> Diagnosis:
    return Diagnosis(verdict=Verdict.TRANSIENT,
                     summary=f"node {node_name} not ready ({why}): pod "
                             f"{(pod.get('metadata') or {}).get('name')} will not finish there",
                     resolution="retrying on another node of this architecture")


def _disruption_reason(status: Mapping[str, Any]) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            return str(condition.get("reason") or "DisruptionTarget")
    return None


def _timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
