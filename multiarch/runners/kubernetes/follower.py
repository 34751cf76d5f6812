"""The decisions while a Job runs: each change from its watches applied, the first
verdict raised.

Fed by reflector.JobWatch (the Job, its pod, their events) and by a clock tick, since some
verdicts are a matter of time (an unschedulable grace, a pod that outlives its deletion).
The rules themselves are pure (diagnostics, events, nodes, scheduling); this module only
keeps what is known so far and reads what the rules need: the Job (jobs get, never
`jobs/status`, which the shipped Role does not grant) and the pod's Node (nodes get needs a
ClusterRole: a 403 there means "unknown", never a failure). Any other 403 fails the build
with the permission named.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes.client.rest import ApiException

from multiarch.errors import (
    ConfigurationError,
    MultiarchError,
    StepFailed,
    TransientError,
    TransientStepFailure,
)
from multiarch.failures import classify_output
from multiarch.runners.kubernetes.client import KubeApi, api_error
from multiarch.runners.kubernetes.diagnostics import (
    Diagnosis,
    Verdict,
    diagnose_pod,
    scheduler_message,
)
from multiarch.runners.kubernetes.events import (
    diagnose_event,
    diagnose_job,
    job_deadline_exceeded,
    scale_up_under_way,
)
from multiarch.runners.kubernetes.logs import Emit, LogFollower, PodView
from multiarch.runners.kubernetes.nodes import diagnose_node_loss, node_emulates
from multiarch.runners.kubernetes.reflector import Broken, Change, JobWatch
from multiarch.runners.kubernetes.scheduling import patience_s

TICK_S = 2.0  # time-based rules (grace periods, a silent node) are re-checked this often
NODE_REFRESH_S = 10.0  # a suspicious pod's node is read again at most this often


@dataclass(frozen=True, kw_only=True)
class JobOutcome:
    job: str
    pod: str
    termination_message: str
    node: str = ""
    emulated: bool = False  # the node's multiarch.dev/emulated annotation (False if unreadable)


@dataclass
class Followed:
    """What the runner knows of the Job so far; only the runner's thread touches it."""

    job: str
    label: str
    steps: list[str]
    job_object: dict[str, Any] | None = None
    pod: dict[str, Any] | None = None
    node: dict[str, Any] | None = None
    node_read_at: float | None = None
    node_forbidden: bool = False
    scale_up: bool = False
    unschedulable_since: float | None = None
    logged: set[str] = field(default_factory=set)
    logs: LogFollower | None = None


class Follower:
    """Applies each change from the watches to `Followed` and raises the first verdict."""

    def __init__(self, api: KubeApi, watch: JobWatch, state: Followed, *, timeout_s: int,
                 grace_s: int, emit: Emit) -> None:
        self.api, self.watch, self.state, self.emit = api, watch, state, emit
        self.timeout_s, self.grace_s = timeout_s, grace_s
        self.view = PodView()

    def follow(self) -> JobOutcome:
        deadline = time.monotonic() + self.timeout_s
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timed_out("")
                item = self.watch.next(min(remaining, TICK_S))
                if isinstance(item, Broken):
                    raise item.error
                outcome = self._apply(item) if item is not None else None
                if outcome is not None:
                    return outcome
                self._check_time()
        finally:
            if self.state.logs is not None:
                self.state.logs.stop()

    def _apply(self, change: Change) -> JobOutcome | None:
        if change.kind == "Job":
            self._on_job(change.obj)
        elif change.kind == "Event":
            self._on_event(change.obj)
        elif change.kind == "Pod":
            return self._on_pod(change)
        return None

    def _on_job(self, job: dict[str, Any]) -> None:
        self.state.job_object = job
        diagnosis = diagnose_job(job)
        if diagnosis is None:
            return
        if job_deadline_exceeded(job):
            raise self._timed_out("Job deadline")
        pod = self._fresh_pod()  # the pod's own verdict names the step and its exit code
        if pod is not None and diagnose_pod(pod).verdict in (Verdict.PERMANENT,
                                                             Verdict.TRANSIENT):
            self._on_pod(Change("Pod", "MODIFIED", pod))
        raise StepFailed(f"{self.state.label} {diagnosis.message}", step="job",
                         exit_code=None, tail=self._tail())

    def _raise_if_deadline(self) -> None:
        """The Job controller kills pods at activeDeadlineSeconds: say so instead of blaming
        the step it interrupted. Read with jobs get (the watched copy may lag the pod)."""
        try:
            job = self.api.api_client.sanitize_for_serialization(
                self.api.batch.read_namespaced_job(self.state.job, self.api.namespace,
                                                   _request_timeout=30))
        except ApiException as exc:
            if exc.status in (401, 403):
                raise api_error(exc, what=f"{self.state.label} reading Job {self.state.job} "
                                          "(needs jobs get)") from exc
            job = self.state.job_object or {}
        except urllib3.exceptions.HTTPError:
            job = self.state.job_object or {}
        if job_deadline_exceeded(job):
            raise self._timed_out("Job deadline")

    def _fresh_pod(self) -> dict[str, Any] | None:
        try:
            response = self.api.core.list_namespaced_pod(
                self.api.namespace, label_selector=f"job-name={self.state.job}",
                _preload_content=False, _request_timeout=30)
            items = json.loads(response.data).get("items") or []
        except (ApiException, urllib3.exceptions.HTTPError, ValueError):
            return self.state.pod
        return items[-1] if items else self.state.pod

    def _on_event(self, event: dict[str, Any]) -> None:
        if scale_up_under_way(event):
            self.state.scale_up = True
            self._log_once(f"{self.state.label} waiting for a new node: "
                           f"{(event.get('message') or '').strip()}")
        diagnosis = diagnose_event(event)
        if diagnosis is None:
            return
        if diagnosis.verdict == Verdict.PERMANENT:
            raise ConfigurationError(f"{self.state.label} {diagnosis.message}")
        if diagnosis.verdict == Verdict.TRANSIENT:
            raise TransientError(f"{self.state.label} {diagnosis.message}")
        self._log_once(f"{self.state.label} {diagnosis.message}")

    def _log_once(self, line: str) -> None:
        if line not in self.state.logged:
            self.state.logged.add(line)
            self.emit(line)

    def _on_pod(self, change: Change) -> JobOutcome | None:
        pod, state = change.obj, self.state
        if change.type == "DELETED" and not _terminal(pod):
            self._raise_if_deadline()
            raise TransientError(f"{state.label} pod {_pod_name(pod)} was deleted before it "
                                 "finished (node drained?); retrying")
        if change.type == "DELETED":
            return None
        state.pod = pod
        self.view.update(pod)
        self._start_logs(pod)
        self._read_node_if_due(pod)
        diagnosis = diagnose_pod(pod)
        if diagnosis.verdict == Verdict.SUCCEEDED:
            self._finish_logs()
            return self._outcome(pod)
        if diagnosis.exit_code is not None and not _terminal(pod):
            return None  # a step ended; wait for the pod's verdict (evicted? failed?)
        if diagnosis.verdict in (Verdict.PERMANENT, Verdict.TRANSIENT):
            self._finish_logs()
            self._raise_if_deadline()
            raise _failure(diagnosis, label=state.label, tail=self._tail(diagnosis.step))
        self._check_node_loss()
        if diagnosis.verdict == Verdict.UNSCHEDULABLE:
            state.unschedulable_since = state.unschedulable_since or time.monotonic()
        else:
            state.unschedulable_since = None
        return None

    def _start_logs(self, pod: dict[str, Any]) -> None:
        state = self.state
        if state.logs is None or state.logs.pod != _pod_name(pod):
            if state.logs is not None:
                state.logs.stop()
            self.view = PodView(pod=pod)
            state.logs = LogFollower(self.api, _pod_name(pod), state.steps, self.view,
                                     label=state.label, emit=self.emit)
            state.logs.start()
            self.watch.watch_events_of(_pod_name(pod))

    def _finish_logs(self) -> None:
        if self.state.logs is not None:
            self.state.logs.finish()

    def _tail(self, step: str | None = None) -> list[str]:
        return self.state.logs.tail(step) if self.state.logs is not None else []

    def _outcome(self, pod: dict[str, Any]) -> JobOutcome:
        node = (pod.get("spec") or {}).get("nodeName") or ""
        return JobOutcome(job=self.state.job, pod=_pod_name(pod), node=node,
                          emulated=node_emulates(self.state.node),
                          termination_message=_termination_message(pod, self.state.steps[-1]))

    def _read_node_if_due(self, pod: dict[str, Any]) -> None:
        """Once when the pod is placed (emulated?), again while the pod looks lost."""
        state, name = self.state, (pod.get("spec") or {}).get("nodeName")
        due = state.node is None or (_looks_lost(pod) and state.node_read_at is not None and
                                     time.monotonic() - state.node_read_at >= NODE_REFRESH_S)
        if not name or state.node_forbidden or not due:
            return
        state.node_read_at = time.monotonic()
        state.node = self._read_node(name)

    def _read_node(self, name: str) -> dict[str, Any] | None:
        try:
            response = self.api.core.read_node(name, _preload_content=False, _request_timeout=10)
            return json.loads(response.data)
        except ApiException as exc:
            if exc.status in (401, 403):
                self.state.node_forbidden = True  # nodes get needs a ClusterRole: unknown
            if exc.status == 404:  # the Node object is gone: so is the node
                return {"status": {"conditions": [{"type": "Ready", "status": "Unknown",
                                                   "reason": "NodeDeleted"}]}}
            return self.state.node
        except (urllib3.exceptions.HTTPError, ValueError):
            return self.state.node

    def _check_node_loss(self) -> None:
        pod = self.state.pod
        if pod is None:
            return
        diagnosis = diagnose_node_loss(pod, self.state.node, now=datetime.now(UTC))
        if diagnosis is not None:
            raise TransientError(f"{self.state.label} {diagnosis.message}")

    def _check_time(self) -> None:
        state = self.state
        if state.logs is not None and state.logs.error is not None:
            raise state.logs.error
        if state.pod is not None and _looks_lost(state.pod):
            self._read_node_if_due(state.pod)
            self._check_node_loss()
        if state.unschedulable_since is None or state.pod is None:
            return
        message = scheduler_message(state.pod) or ""
        patience = patience_s(state.pod, message=message, grace_s=self.grace_s,
                              scale_up=state.scale_up)
        if patience is not None and time.monotonic() - state.unschedulable_since >= patience:
            raise ConfigurationError(f"{state.label} {diagnose_pod(state.pod).message}")

    def _timed_out(self, why: str) -> StepFailed:
        return StepFailed(f"{self.state.label} timed out after {self.timeout_s}s"
                          f"{f' ({why})' if why else ''}: raise runner.timeout_s or make the "
                          "build faster", step="job", exit_code=None, tail=self._tail())


def _failure(diagnosis: Diagnosis, *, label: str, tail: list[str]) -> MultiarchError:
    last = next((line for line in reversed(tail) if line.strip()), "")
    message = f"{label} {diagnosis.message}" + (f": {last.strip()}" if last else "")
    step = diagnosis.step or "pod"
    # The pod's own verdict (evicted, image pull), else the failing tool's own error line:
    # a RUN step that printed "connection refused" and then failed is not retried.
    if diagnosis.verdict == Verdict.TRANSIENT or (
        diagnosis.exit_code not in (None, 0) and classify_output(tail).transient
    ):
        return TransientStepFailure(message, step=step, exit_code=diagnosis.exit_code, tail=tail)
    return StepFailed(message, step=step, exit_code=diagnosis.exit_code, tail=tail)


def _looks_lost(pod: Mapping[str, Any]) -> bool:
    """Worth a look at the node: marked for deletion, or placed and not Ready. Pending
    counts: every step but the last is an init container, so a build pod spends nearly
    all its time Pending, and a lost node changes nothing in such a pod until the taint
    manager deletes it (measured on the test cluster: 72 s after the loss with a 60 s
    toleration; 20 s once the node is read: its 12 s grace, then NODE_REFRESH_S at most)."""
    status = pod.get("status") or {}
    placed = bool((pod.get("spec") or {}).get("nodeName"))
    return bool((pod.get("metadata") or {}).get("deletionTimestamp")) or (
        placed and status.get("phase") in ("Running", "Pending") and any(
            c.get("type") == "Ready" and c.get("status") == "False"
            for c in status.get("conditions") or []))


def _terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _pod_name(pod: Mapping[str, Any]) -> str:
    return (pod.get("metadata") or {}).get("name", "?")


def step_names(manifest: Mapping[str, Any]) -> list[str]:
    spec = manifest["spec"]["template"]["spec"]
    return [c["name"] for c in [*spec.get("initContainers", []), *spec["containers"]]]


def _termination_message(pod: Mapping[str, Any], container: str) -> str:
    for entry in (pod.get("status") or {}).get("containerStatuses") or []:
        if entry.get("name") == container:
            return ((entry.get("state") or {}).get("terminated") or {}).get("message") or ""
    return ""
