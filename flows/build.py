"""`build-multiarch-image`: validate, pin the source, build every platform at once, publish.

Composition only; the work lives in `multiarch/`. Publish depends on every build: if one
required platform fails, nothing is pushed and the failure names each platform and why;
optional platforms that fail are left out (multiarch/partial.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.exceptions import ObjectNotFound, TerminationSignal
from prefect.futures import PrefectFuture
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelled, State
from pydantic import ValidationError

from flows.guard import raise_if_cancelling, signal_name, watch_for_cancellation
from multiarch import events
from multiarch.attest import SupplyChainPlan
from multiarch.errors import ConfigurationError
from multiarch.orchestrate import run_build, run_record
from multiarch.parameters import flow_docstring, flow_signature, request_from_parameters
from multiarch.partial import Built, Failure, PlatformsFailed, settle
from multiarch.platforms import Platform
from multiarch.rebuild import Decision, Fingerprint, published_result
from multiarch.reporting import (
    artifact_key,
    artifact_key_for,
    failure_markdown,
    markdown_summary,
    platform_rows,
)
from multiarch.request import BuildRequest, describe_validation_error
from multiarch.results import BuildResult, PlatformImage
from multiarch.runclaim import TEMP_SERVER_PID_ENV, RunRecord
from multiarch.runners import RunContext, stop_all
from multiarch.source import PinnedSource, without_context_credentials
from multiarch.workspace import RunDirs
from tasks.build import build_platform_task
from tasks.publish import publish_task
from tasks.rebuild import check_changes_task
from tasks.source import pin_source_task

SUMMARY = "Build `image` for every platform in parallel and publish one multi-arch index."


def run_name() -> str:
    """`hello:latest [amd64, arm64]`: what is built, readable in the run list."""
    params = runtime.flow_run.parameters
    image = str(params.get("image", "?")).rsplit("/", 1)[-1]
    arches = [str(p).split("/", 1)[-1] for p in params.get("platforms", [])]
    return f"{image} [{', '.join(arches)}]"


def _stop_builds(*_: Any) -> None:
    """Cancelled or crashed: kill local steps, delete the Jobs this run created."""
    stop_all()


def build_multiarch_image(**parameters: Any) -> BuildResult | State:
    request = validate_request(**request_from_parameters(parameters))
    request = without_context_credentials(request, warn=get_run_logger().warning)
    tag_flow_run(request)
    try:
        with watch_for_cancellation():
            return build_and_publish(request)
    except (TerminationSignal, KeyboardInterrupt) as exc:
        if supervisor_sets_state():
            stop_all()
            raise
        return stop_and_cancel(exc)


# The parameters (and the UI form, and their help) are BuildRequest's fields.
build_multiarch_image.__signature__ = flow_signature(BuildRequest)  # type: ignore[attr-defined]
build_multiarch_image.__doc__ = flow_docstring(SUMMARY, BuildRequest)
build_multiarch_image = flow(  # type: ignore[assignment]
    name="build-multiarch-image",
    flow_run_name=run_name,
    log_prints=True,
    on_cancellation=[_stop_builds],
    on_crashed=[_stop_builds],
)(build_multiarch_image)


@dataclass(kw_only=True)
class PrefectSteps:
    """The run's units as Prefect tasks: retries, concurrency tags, the UI's task list."""

    log: Any
    flow_run_id: str

    def pin_source(self, request: BuildRequest) -> PinnedSource:
        return pin_source_task(request)

    def check_changes(self, request: BuildRequest, source: PinnedSource
                      ) -> tuple[Fingerprint | None, Decision]:
        return check_changes_task(request, source)

    def build_all(self, request: BuildRequest, source: PinnedSource,
                  run: RunContext) -> Built:
        limited = limited_arch_tags(request.platforms)
        builds = [
            build_platform_task.with_options(tags=[arch_tag(p)] if arch_tag(p) in limited else [])
            .submit(request, source, p, run.dirs)
            for p in request.platforms
        ]
        return collect_images(builds, request=request)

    def publish(self, request: BuildRequest, source: PinnedSource,
                images: list[PlatformImage], run: RunContext,
                annotations: Mapping[str, str] | None,
                supply: SupplyChainPlan | None = None) -> BuildResult:
        return publish_task(request, source, images, run.dirs,
                            annotations=dict(annotations) if annotations else None,
                            supply=supply)

    def run_record(self, request: BuildRequest, dirs: RunDirs) -> RunRecord:
        server_pid = os.environ.get(TEMP_SERVER_PID_ENV)
        return run_record(request, dirs, flow_run_id=self.flow_run_id or None,
                          api_url=PREFECT_API_URL.value(),
                          server_pid=int(server_pid) if server_pid else None)

    def before_publish(self) -> None:
        raise_if_cancelling()


def build_and_publish(request: BuildRequest) -> BuildResult:
    flow_run_id = str(runtime.flow_run.id or "")
    steps = PrefectSteps(log=get_run_logger(), flow_run_id=flow_run_id)
    try:
        outcome = run_build(request, steps, run_id=(flow_run_id or "local").replace("-", ""))
    except Exception as exc:
        emit_failed(request, exc)
        raise
    if outcome.up_to_date is not None:
        return report_up_to_date(request, outcome.up_to_date)
    result = outcome.result
    assert result is not None
    key = artifact_key(result)
    create_table_artifact(
        key=f"{key}-platforms",
        table=platform_rows(result),
        description=f"Platforms of {result.pull_reference}",
    )
    create_markdown_artifact(
        key=f"{key}-summary",
        markdown=markdown_summary(result),
        description=f"Published {result.image}",
    )
    steps.log.info(f"published {result.pull_reference} as tags {', '.join(result.tags)}")
    emit_published(request, result, outcome.source.revision if outcome.source else None)
    return result


def is_subflow() -> bool:
    """Run inside another flow run (a fleet run's image): its publish must not trigger
    the fleet's `dependents` deployment again."""
    return runtime.flow_run.parent_flow_run_id is not None


def emit_published(request: BuildRequest, result: BuildResult, revision: str | None) -> None:
    """A new index was pushed (never for an up-to-date run: nothing moved)."""
    events.emit_safely(emit_event, get_run_logger().warning, event=events.PUBLISHED,
                       resource=events.resource(request, subflow=is_subflow()),
                       payload=events.published_payload(result, source_revision=revision))


def emit_failed(request: BuildRequest, error: BaseException) -> None:
    events.emit_safely(emit_event, get_run_logger().warning, event=events.FAILED,
                       resource=events.resource(request, subflow=is_subflow()),
                       payload=events.failed_payload(request, error))


def supervisor_sets_state() -> bool:
    """Prefect's runner was asked to reschedule this run (the Kubernetes worker's
    `backoff_limit: 0` sets PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR=reschedule) or to
    relinquish it: it writes the run's next state itself, and a Cancelled returned here
    would replace that, so the next attempt would never run. The builds stop either way."""
    try:
        from prefect._internal.control_listener import get_intent  # Prefect 3.9's own
    except ImportError:
        return False
    return get_intent() in ("reschedule", "relinquish")


def stop_and_cancel(exc: BaseException) -> State:
    """Cancelled, by a signal or through the API: stop every build, end the run Cancelled."""
    stop_all()
    how = signal_name(exc)
    message = f"cancelled ({how}): every build was stopped and nothing was published"
    get_run_logger().warning(message)
    return Cancelled(message=message)


def report_up_to_date(request: BuildRequest, decision: Decision) -> BuildResult:
    """Nothing changed: say so, and why, and return what the registry already holds."""
    assert decision.index_digest is not None
    result = published_result(request, decision.index_digest)
    reasons = "\n".join(f"- {reason}" for reason in decision.reasons)
    create_markdown_artifact(
        key=f"{artifact_key(result)}-summary",
        markdown=f"# `{request.image}` is up to date\n\nNo build ran: the tag already holds "
        f"`{decision.index_digest}` built from the same inputs.\n\n{reasons}\n",
        description=f"{request.image} up to date",
    )
    get_run_logger().info(f"up to date: {request.image} is {decision.index_digest}; no build ran")
    return result


def run_tags(request: BuildRequest) -> list[str]:
    """Searchable in the UI: which image, which platforms."""
    return [f"image:{request.image.repository}",
            *(f"platform:{platform}" for platform in request.platforms)]


def tag_flow_run(request: BuildRequest) -> None:
    flow_run = runtime.flow_run
    if flow_run.id is None:
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(UUID(str(flow_run.id)),
                               tags=sorted({*flow_run.tags, *run_tags(request)}))


def arch_tag(platform: Platform) -> str:
    """The tag (and task concurrency limit) of a platform's builds: `arch-arm64`.

    Small native nodes must not be flooded: `prefect concurrency-limit create arch-arm64 1`
    lets one arm64 build run at a time across every flow run; without a limit, no limit.
    """
    return f"arch-{platform.architecture}"


def limited_arch_tags(platforms: tuple[Platform, ...]) -> set[str]:
    """The `arch-*` tags that have a concurrency limit on the server.

    Only those are put on build tasks: every tagged task run takes a lease on the server,
    and with SQLite those leases contend and delay unrelated builds (measured: parallel
    builds started up to 3 s apart), so an unlimited architecture stays untagged.
    """
    limited = set()
    with get_client(sync_client=True) as client:
        for tag in {arch_tag(p) for p in platforms}:
            try:
                client.read_concurrency_limit_by_tag(tag)
            except ObjectNotFound:
                continue
            limited.add(tag)
    return limited


def validate_request(**fields: Any) -> BuildRequest:
    try:
        return BuildRequest(**fields)
    except ValidationError as exc:
        reason = describe_validation_error(exc)
        raise ConfigurationError(f"invalid build request: {reason}") from exc


def collect_images(futures: list[PrefectFuture[PlatformImage]], *,
                   request: BuildRequest) -> Built:
    """Wait for every platform, then apply the partial-failure policy; when it refuses,
    a failure artifact lists each failed platform and why."""
    images: list[PlatformImage] = []
    failures: list[Failure] = []
    for platform, future in zip(request.platforms, futures, strict=True):
        future.wait()
        state = future.state
        if state.is_completed():
            images.append(future.result())
            continue
        reason = state.result(raise_on_failure=False)
        failures.append((platform, reason if isinstance(reason, BaseException)
                         else (state.message or state.name)))
    try:
        return settle(request, images, failures, warn=get_run_logger().warning)
    except PlatformsFailed:
        create_markdown_artifact(
            key=f"{artifact_key_for(request.image.name)}-failure",
            markdown=failure_markdown(str(request.image),
                                      [(f"{p} (optional)" if request.is_optional(p)
                                        else str(p), reason) for p, reason in failures]),
            description=f"{request.image} failed",
        )
        raise
