"""A pod's status as the kubelet reports it, kept apart from running the containers.

Job runners decide everything from this object (phase, conditions, each container's
waiting/running/terminated state, reason and message), so its shape follows the kubelet
of Kubernetes 1.36: the PodReadyToStartContainers/Initialized/Ready/ContainersReady
conditions with their reasons, `lastTransitionTime` moving only on a change, and the
kubelet never overwriting what others own (PodScheduled from the scheduler, a terminal
phase and DisruptionTarget written by pod GC).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.cluster.agent.kubeapi import Obj, now_rfc3339

TERMINAL = ("Succeeded", "Failed")


@dataclass
class Outcome:
    """How a pod ended when something other than its containers ended it."""

    reason: str
    message: str
    condition: dict[str, Any] | None = None  # e.g. DisruptionTarget for evictions


def disruption(reason: str, message: str) -> dict[str, Any]:
    return {
        "type": "DisruptionTarget",
        "status": "True",
        "lastProbeTime": None,
        "lastTransitionTime": now_rfc3339(),
        "reason": reason,
        "message": message,
    }


def container_status(container: dict[str, Any], waiting: str) -> dict[str, Any]:
    return {
        "name": container["name"],
        "image": container["image"],
        "imageID": "",
        "ready": False,
        "restartCount": 0,
        "started": False,
        "state": {"waiting": {"reason": waiting}},
    }


@dataclass
class PodStatus:
    """The kubelet's view of one pod; `write()` merges it into the stored pod."""

    spec: dict[str, Any]
    ips: dict[str, Any]
    phase: str = "Pending"
    outcome: Outcome | None = None
    sandbox_ready: bool = False
    started_at: str = field(default_factory=now_rfc3339)
    init: list[dict[str, Any]] = field(init=False)
    main: list[dict[str, Any]] = field(init=False)
    _transitions: dict[str, tuple[str, str]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        inits = self.spec.get("initContainers", [])
        self.init = [container_status(c, "PodInitializing") for c in inits]
        waiting = "PodInitializing" if inits else "ContainerCreating"
        self.main = [container_status(c, waiting) for c in self.spec["containers"]]

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL

    def _condition(self, kind: str, ok: bool, reason: str = "", message: str = "") -> dict:
        status = "True" if ok else "False"
        previous = self._transitions.get(kind)
        if previous is None or previous[0] != status:
            self._transitions[kind] = (status, now_rfc3339())
        condition = {
            "type": kind,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": self._transitions[kind][1],
        }
        if not ok and reason:
            condition.update(reason=reason, message=message)
        return condition

    def conditions(self) -> list[dict[str, Any]]:
        incomplete = [
            s["name"]
            for s in self.init
            if "terminated" not in s["state"] or s["state"]["terminated"]["exitCode"]
        ]
        unready = [s["name"] for s in self.main if not s["ready"]]
        ready = not unready and not self.terminal
        reason = {"Succeeded": "PodCompleted", "Failed": "PodFailed"}.get(
            self.phase, "ContainersNotReady"
        )
        message = "" if self.terminal else f"containers with unready status: [{' '.join(unready)}]"
        return [
            self._condition("PodReadyToStartContainers", self.sandbox_ready),
            self._condition(
                "Initialized",
                not incomplete,
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(incomplete)}]",
            ),
            self._condition("Ready", ready, reason, message),
            self._condition("ContainersReady", ready, reason, message),
        ]

    def body(self) -> Obj:
        """The status to send as a strategic-merge patch: conditions merge by type, so
        those the kubelet does not own (PodScheduled, a DisruptionTarget from the taint
        manager) are kept by the API server."""
        conditions = self.conditions()
        if self.outcome is not None and self.outcome.condition is not None:
            conditions.append(self.outcome.condition)
        status: Obj = {
            **self.ips,
            "phase": self.phase,
            "startTime": self.started_at,
            "conditions": conditions,
            "containerStatuses": self.main,
        }
        if self.init:
            status["initContainerStatuses"] = self.init
        if self.outcome is not None and self.phase == "Failed":
            status.update(reason=self.outcome.reason, message=self.outcome.message)
        return status
