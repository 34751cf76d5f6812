"""One Job followed to its end: created, its pod watched (not polled) against a wall-clock
deadline, its logs streamed, the pod's verdict decided by `diagnose_pod`, always deleted."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from multiarch.errors import (
    ConfigurationError,
    MultiarchError,
    StepFailed,
    TransientError,
    TransientStepFailure,
)
from multiarch.failures import classify_output
from multiarch.runners.kubernetes.client import KubeApi, api_error, delete_job, track_job
from multiarch.runners.kubernetes.diagnostics import Diagnosis, Verdict, diagnose_pod
from multiarch.runners.kubernetes.logs import Emit, LogFollower, PodView

WATCH_CHUNK_S = 30  # longest single watch call; the loop re-checks deadlines between calls


@dataclass(frozen=True, kw_only=True)
class JobOutcome:
    job: str
    pod: str
    termination_message: str

def run_job(api: KubeApi, manifest: Mapping[str, Any], *, label: str, timeout_s: int,
            unschedulable_grace_s: int, emit: Emit) -> JobOutcome:
    """Create the Job, follow its pod to the end, always delete it."""
    try:
        created = api.batch.create_namespaced_job(api.namespace, client.V1Job.from_dict(manifest),
                                                  _request_timeout=30)
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        raise api_error(exc, what=f"{label} creating Job") from exc
    name = created.metadata.name
    track_job(api, name)
    emit(f"{label} created Job {api.namespace}/{name}")
    try:
        return _follow_job(api, name, manifest, label=label, timeout_s=timeout_s,
                           grace_s=unschedulable_grace_s, emit=emit)
    finally:
        delete_job(api, name)
        emit(f"{label} deleted Job {api.namespace}/{name}")


def _follow_job(api: KubeApi, job: str, manifest: Mapping[str, Any], *, label: str,
                timeout_s: int, grace_s: int, emit: Emit) -> JobOutcome:
    deadline = time.monotonic() + timeout_s
    view = PodView()
    steps = _step_names(manifest)
    logs: LogFollower | None = None
    unschedulable_since: float | None = None
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StepFailed(f"{label} timed out after {timeout_s}s: raise runner.timeout_s"
                                 " or make the build faster", step="job", exit_code=None,
                                 tail=logs.tail() if logs else [])
            chunk = min(remaining, WATCH_CHUNK_S)
            if unschedulable_since is not None:
                chunk = min(chunk, max(0.5, unschedulable_since + grace_s - time.monotonic()))
            for event_type, pod in _watch_pods(api, job, timeout_s=chunk):
                if event_type == "DELETED" and not _terminal(pod):
                    _raise_if_deadline(api, job, label=label, timeout_s=timeout_s)
                    raise TransientError(f"{label} pod {_pod_name(pod)} was deleted before it "
                                         "finished (node drained?); retrying")
                view.update(pod)
                if logs is None:
                    logs = LogFollower(api, _pod_name(pod), steps, view, label=label, emit=emit)
                    logs.start()
                diagnosis = diagnose_pod(pod)
                if diagnosis.verdict == Verdict.SUCCEEDED:
                    logs.finish()
                    return JobOutcome(job=job, pod=_pod_name(pod),
                                      termination_message=_termination_message(pod, steps[-1]))
                if diagnosis.exit_code is not None and not _terminal(pod):
                    continue  # a step ended; wait for the pod's verdict (evicted? failed?)
                if diagnosis.verdict in (Verdict.PERMANENT, Verdict.TRANSIENT):
                    logs.finish()
                    _raise_if_deadline(api, job, label=label, timeout_s=timeout_s)
                    raise _failure(diagnosis, label=label, tail=logs.tail(diagnosis.step))
                if diagnosis.verdict == Verdict.UNSCHEDULABLE:
                    unschedulable_since = unschedulable_since or time.monotonic()
                else:
                    unschedulable_since = None
                if unschedulable_since is not None and \
                        time.monotonic() - unschedulable_since >= grace_s:
                    raise ConfigurationError(f"{label} {diagnosis.message}")
                if time.monotonic() >= deadline:
                    break
            if unschedulable_since is not None and \
                    time.monotonic() - unschedulable_since >= grace_s and view.pod is not None:
                raise ConfigurationError(f"{label} {diagnose_pod(view.pod).message}")
    finally:
        if logs is not None:
            logs.stop()


def _watch_pods(api: KubeApi, job: str, *, timeout_s: float
                ) -> Iterator[tuple[str, dict[str, Any]]]:
    """Pod events of one Job for at most `timeout_s` (the server ends the watch)."""
    stream = watch.Watch().stream(
        api.core.list_namespaced_pod, api.namespace, label_selector=f"job-name={job}",
        timeout_seconds=max(1, int(timeout_s)), _request_timeout=timeout_s + 15,
    )
    try:
        for event in stream:
            raw = event.get("raw_object")
            if isinstance(raw, dict) and raw.get("kind") != "Status":
                yield event["type"], raw
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        if isinstance(exc, ApiException) and exc.status in (401, 403, 404):
            raise api_error(exc, what=f"watching pods of Job {job}") from exc
        # a dropped or expired watch: the caller simply watches again


def _raise_if_deadline(api: KubeApi, job: str, *, label: str, timeout_s: int) -> None:
    """The Job controller kills pods at activeDeadlineSeconds; say so instead of blaming
    the step it interrupted (or retrying a deleted pod)."""
    try:
        status = api.api_client.sanitize_for_serialization(
            api.batch.read_namespaced_job(job, api.namespace, _request_timeout=30)
        ).get("status") or {}
    except (ApiException, urllib3.exceptions.HTTPError):
        return
    for condition in status.get("conditions") or []:
        if condition.get("reason") == "DeadlineExceeded" and condition.get("status") == "True":
            raise StepFailed(f"{label} timed out after {timeout_s}s (Job deadline): raise "
                             "runner.timeout_s or make the build faster", step="job",
                             exit_code=None, tail=[])


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


def _terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _pod_name(pod: Mapping[str, Any]) -> str:
    return (pod.get("metadata") or {}).get("name", "?")


def _step_names(manifest: Mapping[str, Any]) -> list[str]:
    spec = manifest["spec"]["template"]["spec"]
    return [c["name"] for c in [*spec.get("initContainers", []), *spec["containers"]]]


def _termination_message(pod: Mapping[str, Any], container: str) -> str:
    for entry in (pod.get("status") or {}).get("containerStatuses") or []:
        if entry.get("name") == container:
            return ((entry.get("state") or {}).get("terminated") or {}).get("message") or ""
    return ""


