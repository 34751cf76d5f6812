"""One Job followed to its end: created; the Job, its pod and their events watched (list +
watch, see reflector.JobWatch) against a wall-clock deadline; its logs streamed; verdicts
decided by follower.Follower with the pure rules; always deleted."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from multiarch.runners.kubernetes.backoff import Backoff
from multiarch.runners.kubernetes.client import KubeApi, api_error, delete_job, track_job
from multiarch.runners.kubernetes.follower import Followed, Follower, JobOutcome, step_names
from multiarch.runners.kubernetes.logs import Emit
from multiarch.runners.kubernetes.reflector import JobWatch

__all__ = ["JobOutcome", "run_job"]


def run_job(api: KubeApi, manifest: Mapping[str, Any], *, label: str, timeout_s: int,
            unschedulable_grace_s: int, emit: Emit,
            backoff: Callable[[], Backoff] = Backoff) -> JobOutcome:
    """Create the Job, follow it to the end, always delete it."""
    try:
        created = api.batch.create_namespaced_job(api.namespace, client.V1Job.from_dict(manifest),
                                                  _request_timeout=30)
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        raise api_error(exc, what=f"{label} creating Job (needs jobs create)") from exc
    name = created.metadata.name
    track_job(api, name)
    emit(f"{label} created Job {api.namespace}/{name}")
    try:
        with JobWatch(api, name, backoff=backoff) as watch:
            state = Followed(job=name, label=label, steps=step_names(manifest))
            return Follower(api, watch, state, timeout_s=timeout_s,
                            grace_s=unschedulable_grace_s, emit=emit).follow()
    finally:
        delete_job(api, name)
        emit(f"{label} deleted Job {api.namespace}/{name}")
