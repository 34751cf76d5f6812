"""Prefect events a build emits, so other work can follow a publish (the fleet's trigger).

`multiarch.image.published` is emitted only when a new index was pushed (an up-to-date
run changed nothing, so nothing downstream needs to move); `multiarch.build.failed` when a
run fails after validation. The resource is the repository (`registry/repository`, no
tag, never credentials: an ImageReference cannot carry them), with
`multiarch.subflow` telling whether the run was a subflow (of a fleet run): the trigger in
prefect.yaml only follows publishes made outside one, so a fleet's own base publish does
not start a second fleet run racing the first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from multiarch.partial import PlatformsFailed
from multiarch.request import BuildRequest
from multiarch.results import BuildResult

PUBLISHED = "multiarch.image.published"
FAILED = "multiarch.build.failed"
REASON_LIMIT = 2000


def resource(request: BuildRequest, *, subflow: bool) -> dict[str, str]:
    repository = request.image.name
    return {
        "prefect.resource.id": f"multiarch.repository.{repository}",
        "prefect.resource.name": repository,
        "multiarch.repository": repository,
        "multiarch.subflow": "true" if subflow else "false",
    }


def published_payload(result: BuildResult, *, source_revision: str | None) -> dict[str, Any]:
    """`platforms`: those in the index; `left_out`: optional platforms that failed."""
    return {
        "index_digest": result.index_digest,
        "tags": list(result.tags),
        "platforms": [str(p.platform) for p in result.platforms],
        "left_out": [str(item.platform) for item in result.left_out],
        "source_revision": source_revision,
    }


def failed_payload(request: BuildRequest, error: BaseException) -> dict[str, Any]:
    """Why, and which platforms failed (none when the run failed before or after building)."""
    reason = " ".join(str(error).split())[:REASON_LIMIT] or type(error).__name__
    return {
        "reason": reason,
        "failed_platforms": list(error.platforms) if isinstance(error, PlatformsFailed) else [],
    }


def emit_safely(emit: Callable[..., Any], warn: Callable[[str], None], *, event: str,
                resource: dict[str, str], payload: dict[str, Any]) -> None:
    """An event that cannot be sent is a warning, never a failed build."""
    try:
        emit(event=event, resource=resource, payload=payload)
    except Exception as exc:  # emitting must never fail a build
        warn(f"could not emit event {event} for {resource['multiarch.repository']}: {exc}")
