"""Read a build pod's status and say what it means: a pure function, tested on plain dicts.

Kubernetes reports trouble in many places (phase, status.reason, conditions, each
container's waiting/terminated state). Collecting the rules here keeps the runner a
simple loop and lets each message say what to do. The verdict decides retries: an evicted
pod or a lost node is transient (Prefect retries the task); a missing image, an OOM kill
or a failing step is permanent.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# status.reason values set when the node, not the build, ended the pod.
TRANSIENT_POD_REASONS = frozenset({
    "Evicted", "NodeLost", "NodeShutdown", "Shutdown", "Terminated", "UnexpectedAdmissionError",
    "Preempting",
})
PULL_FAILURES = frozenset({"ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
_MISSING_CLAIM = re.compile(r'persistentvolumeclaim "[^"]+" not found')
CONFIG_FAILURES = frozenset({"CreateContainerConfigError", "CreateContainerError",
                             "RunContainerError"})


class Verdict(StrEnum):
    PENDING = "pending"  # nothing wrong yet: scheduling, pulling, initialising
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    UNSCHEDULABLE = "unschedulable"  # fail after a grace period (a node may come)
    TRANSIENT = "transient"  # retry the whole platform
    PERMANENT = "permanent"  # fail now


@dataclass(frozen=True, kw_only=True)
class Diagnosis:
    verdict: Verdict
    summary: str
    resolution: str = ""
    step: str | None = None  # the container (plan step) concerned
    exit_code: int | None = None

    @property
    def message(self) -> str:
        return f"{self.summary}: {self.resolution}" if self.resolution else self.summary


def diagnose_pod(pod: Mapping[str, Any]) -> Diagnosis:
    """Classify a pod (Kubernetes JSON, camelCase) at one moment."""
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    phase = status.get("phase", "Pending")
    reason = status.get("reason")
    node = spec.get("nodeName") or "its node"
    if reason in TRANSIENT_POD_REASONS or (phase == "Failed" and reason == "NodeLost"):
        return Diagnosis(
            verdict=Verdict.TRANSIENT,
            summary=f"pod {_name(pod)} was {reason.lower()} on {node}: "
                    f"{status.get('message', '').strip()}".rstrip(": "),
            resolution="retrying on another attempt; if this repeats, give build pods more "
                       "memory/disk or fewer concurrent builds per node",
        )
    disruption = _disruption(status)
    if disruption is not None and phase == "Failed":
        return Diagnosis(
            verdict=Verdict.TRANSIENT,
            summary=f"pod {_name(pod)} was disrupted on {node} ({disruption})",
            resolution="retrying on another attempt; the node was lost, drained or preempted",
        )
    if reason == "DeadlineExceeded":
        return Diagnosis(verdict=Verdict.PERMANENT,
                         summary=f"pod {_name(pod)} ran past its deadline",
                         resolution="raise runner.timeout_s or make the build faster")
    for container, state in _container_states(status):
        found = _diagnose_container(container, state)
        if found is not None:
            return found
    if phase == "Succeeded":
        return Diagnosis(verdict=Verdict.SUCCEEDED, summary=f"pod {_name(pod)} succeeded")
    if phase == "Failed":
        return Diagnosis(verdict=Verdict.PERMANENT,
                         summary=f"pod {_name(pod)} failed: {reason or 'unknown reason'}",
                         resolution=status.get("message", ""))
    unschedulable = _unschedulable(status)
    if unschedulable is not None:
        return _unschedulable_diagnosis(pod, unschedulable)
    if phase == "Running":
        return Diagnosis(verdict=Verdict.RUNNING, summary=f"pod {_name(pod)} running on {node}")
    return Diagnosis(verdict=Verdict.PENDING, summary=f"pod {_name(pod)} pending")


def _diagnose_container(name: str, state: Mapping[str, Any]) -> Diagnosis | None:
    waiting = state.get("waiting") or {}
    terminated = state.get("terminated") or {}
    if waiting.get("reason") in PULL_FAILURES:
        return Diagnosis(
            verdict=Verdict.PERMANENT, step=name,
            summary=f"step {name} cannot pull its image ({waiting['reason']}): "
                    f"{waiting.get('message', '').strip()}".rstrip(": "),
            resolution="check runner.kubernetes.builder_image exists for this architecture "
                       "and that the nodes may pull it (imagePullSecrets)",
        )
    if waiting.get("reason") in CONFIG_FAILURES:
        return Diagnosis(
            verdict=Verdict.PERMANENT, step=name,
            summary=f"step {name} cannot start ({waiting['reason']}): "
                    f"{waiting.get('message', '').strip()}".rstrip(": "),
            resolution="check that the Secret and PersistentVolumeClaim it mounts exist",
        )
    if terminated.get("reason") == "OOMKilled":
        return Diagnosis(
            verdict=Verdict.PERMANENT, step=name, exit_code=terminated.get("exitCode"),
            summary=f"step {name} was killed for using too much memory (OOMKilled)",
            resolution="raise the memory limit in runner.kubernetes.placements for this "
                       "platform, or reduce the build's parallelism",
        )
    exit_code = terminated.get("exitCode")
    if terminated and exit_code not in (0, None):
        return Diagnosis(
            verdict=Verdict.PERMANENT, step=name, exit_code=exit_code,
            summary=f"step {name} exited with {exit_code}",
        )
    return None


def _container_states(status: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for key in ("initContainerStatuses", "containerStatuses"):
        for entry in status.get(key) or []:
            yield entry.get("name", "?"), entry.get("state") or {}


def _disruption(status: Mapping[str, Any]) -> str | None:
    """Kubernetes 1.26+: a DisruptionTarget condition says the pod was killed from outside
    (pod GC after node loss, taint manager, preemption, eviction API)."""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            reason = condition.get("reason", "DisruptionTarget")
            message = condition.get("message", "").strip()
            return f"{reason}: {message}" if message else reason
    return None


def scheduler_message(pod: Mapping[str, Any]) -> str | None:
    """Why the scheduler cannot place the pod ("0/2 nodes are available: ..."), if it cannot."""
    return _unschedulable(pod.get("status") or {})


def _unschedulable(status: Mapping[str, Any]) -> str | None:
    for condition in status.get("conditions") or []:
        if (condition.get("type") == "PodScheduled" and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable"):
            return condition.get("message", "")
    return None


def _unschedulable_diagnosis(pod: Mapping[str, Any], message: str) -> Diagnosis:
    if _MISSING_CLAIM.search(message):  # no node will ever do: a missing object
        return Diagnosis(
            verdict=Verdict.PERMANENT,
            summary=f"pod {_name(pod)} cannot be scheduled: {message.strip()}",
            resolution="create the PersistentVolumeClaim (deployments/kubernetes/"
                       "shared-volume.yaml) or set runner.kubernetes.shared_claim to one",
        )
    spec = pod.get("spec") or {}
    selector = ", ".join(f"{k}={v}" for k, v in (spec.get("nodeSelector") or {}).items())
    arch = (spec.get("nodeSelector") or {}).get("kubernetes.io/arch", "this architecture")
    return Diagnosis(
        verdict=Verdict.UNSCHEDULABLE,
        summary=f"no schedulable node for pod {_name(pod)} (nodeSelector {selector or 'none'})"
                f": {message.strip()}".rstrip(": "),
        resolution=f"add a node labelled kubernetes.io/arch={arch} (with room and matching "
                   "tolerations for its taints), or drop the platform",
    )


def _name(pod: Mapping[str, Any]) -> str:
    return (pod.get("metadata") or {}).get("name", "?")
