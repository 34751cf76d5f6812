"""Nodes and the scheduler's filters: nodeSelector, node affinity, taints and tolerations.

Pinning each platform's Job to a node of its architecture is the point of the Kubernetes
runner, and "no node of that architecture" must fail fast with a clear message. So the
fake filters nodes like kube-scheduler's NodeUnschedulable, TaintToleration and
NodeAffinity plugins and words the failure the same way:
`0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. preemption: ...`.
Pure functions over plain dicts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SCHEDULED_EFFECTS = ("NoSchedule", "NoExecute")
AFFINITY_MISMATCH = "node(s) didn't match Pod's node affinity/selector"


@dataclass(frozen=True)
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"

    @classmethod
    def parse(cls, text: str) -> Taint:
        """`key=value:Effect` or `key:Effect`, as `kubectl taint` writes them."""
        spec, _, effect = text.rpartition(":")
        key, _, value = spec.partition("=")
        return cls(key=key, value=value, effect=effect)

    def as_dict(self) -> dict[str, str]:
        return (
            {"key": self.key, "value": self.value, "effect": self.effect}
            if self.value
            else {"key": self.key, "effect": self.effect}
        )


@dataclass(frozen=True)
class NodeSpec:
    """One fake node. Every node runs its pods on this machine (arm64 pods included)."""

    name: str
    arch: str = "amd64"
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[Taint | str] = ()
    unschedulable: bool = False

    def manifest(self, *, index: int) -> dict[str, Any]:
        labels = {
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": self.arch,
            "kubernetes.io/hostname": self.name,
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": self.arch,
            **self.labels,
        }
        taints = [(Taint.parse(t) if isinstance(t, str) else t).as_dict() for t in self.taints]
        ip = f"10.0.0.{10 + index}"
        return {
            "metadata": {"name": self.name, "labels": labels},
            "spec": {
                "podCIDR": f"10.244.{index}.0/24",
                "unschedulable": self.unschedulable,
                **({"taints": taints} if taints else {}),
            },
            "status": {
                "conditions": [
                    _condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                    _condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                    _condition("PIDPressure", "False", "KubeletHasSufficientPID"),
                    _condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
                ],
                "addresses": [
                    {"type": "InternalIP", "address": ip},
                    {"type": "Hostname", "address": self.name},
                ],
                "capacity": {"cpu": "2", "memory": "8Gi", "pods": "110"},
                "allocatable": {"cpu": "2", "memory": "8Gi", "pods": "110"},
                "nodeInfo": {
                    "architecture": self.arch,
                    "operatingSystem": "linux",
                    "osImage": "Debian GNU/Linux 12 (bookworm)",
                    "kernelVersion": "6.1.0",
                    "kubeletVersion": "v1.31.0",
                    "kubeProxyVersion": "v1.31.0",
                    "containerRuntimeVersion": "containerd://1.7.0",
                    "machineID": f"{index:032x}",
                    "systemUUID": f"{index:032x}",
                    "bootID": f"{index:032x}",
                },
            },
        }


def _condition(kind: str, status: str, reason: str, message: str = "") -> dict[str, str]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message or reason,
        "lastHeartbeatTime": "1970-01-01T00:00:00Z",
        "lastTransitionTime": "1970-01-01T00:00:00Z",
    }


def tolerates(tolerations: Sequence[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    """k8s.io/api/core/v1 Toleration.ToleratesTaint."""
    for toleration in tolerations:
        effect, key = toleration.get("effect"), toleration.get("key")
        if effect and effect != taint.get("effect"):
            continue
        if key and key != taint.get("key"):
            continue
        operator = toleration.get("operator") or "Equal"
        if operator == "Exists" or (toleration.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _expression_matches(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator = expression["key"], expression["operator"]
    values = expression.get("values") or []
    match operator:
        case "In":
            return labels.get(key) in values
        case "NotIn":
            return labels.get(key) not in values
        case "Exists":
            return key in labels
        case "DoesNotExist":
            return key not in labels
        case "Gt" | "Lt":
            try:
                have, want = int(labels[key]), int(values[0])
            except (KeyError, IndexError, ValueError):
                return False
            return have > want if operator == "Gt" else have < want
    return False


def _affinity_matches(spec: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    selector = spec.get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    return not terms or any(
        all(_expression_matches(e, labels) for e in term.get("matchExpressions") or [])
        for term in terms
    )


def filter_node(spec: Mapping[str, Any], node: Mapping[str, Any]) -> str | None:
    """None if the pod fits the node, else the scheduler's reason for this node."""
    if (node.get("spec") or {}).get("unschedulable"):
        return "node(s) were unschedulable"
    taints = list((node.get("spec") or {}).get("taints") or [])
    ready = next(
        (c for c in (node.get("status") or {}).get("conditions", []) if c["type"] == "Ready"), {}
    )
    if ready.get("status") != "True":
        taints.append({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"})
    tolerations = spec.get("tolerations") or []
    for taint in taints:
        if taint.get("effect") in SCHEDULED_EFFECTS and not tolerates(tolerations, taint):
            return f"node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
    labels = (node.get("metadata") or {}).get("labels") or {}
    if not _affinity_matches(spec, labels):
        return AFFINITY_MISMATCH
    return None


def schedule(
    spec: Mapping[str, Any],
    nodes: Sequence[Mapping[str, Any]],
    *,
    prefilter_error: str | None = None,
) -> tuple[str | None, str]:
    """(node name, "") if the pod fits somewhere, else (None, the FailedScheduling message)."""
    if not nodes:
        return None, "no nodes available to schedule pods"
    total = len(nodes)
    preemption = (
        f" preemption: 0/{total} nodes are available: {total} Preemption is not "
        "helpful for scheduling."
    )
    if prefilter_error:
        return None, f"0/{total} nodes are available: {prefilter_error}.{preemption}"
    reasons: Counter[str] = Counter()
    for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        reason = filter_node(spec, node)
        if reason is None:
            return node["metadata"]["name"], ""
        reasons[reason] += 1
    summary = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
    return None, f"0/{total} nodes are available: {summary}.{preemption}"
