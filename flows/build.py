"""`build-multiarch-image`: validate, pin the source, build every platform at once, publish.

Composition only; the work lives in `multiarch/`. Publish depends on every build: if one
platform fails, nothing is pushed and the failure names each platform and why.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound, TerminationSignal
from prefect.futures import PrefectFuture
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelled, State
from pydantic import ValidationError

from flows.guard import raise_if_cancelling, signal_name, watch_for_cancellation
from multiarch.errors import ConfigurationError, MultiarchError
from multiarch.platforms import Platform
from multiarch.preflight import check_target, preflight_request
from multiarch.rebuild import Decision, published_result
from multiarch.reporting import (
    artifact_key,
    artifact_key_for,
    failure_markdown,
    markdown_summary,
    platform_rows,
)
from multiarch.request import BuildRequest, RunnerOptions, describe_validation_error
from multiarch.results import BuildResult, PlatformImage
from multiarch.runclaim import RunRecord, claim_run, sweep
from multiarch.runners.dispatch import cleanup_run, preflight, stop_everything
from multiarch.runners.local import RunDirs, run_dirs
from multiarch.source import without_context_credentials
from tasks.build import build_platform_task
from tasks.publish import publish_task
from tasks.rebuild import check_changes_task
from tasks.source import pin_source_task

# The CLI sets this to the pid of the temporary Prefect server it started, so that a sweep
# can stop that server should the CLI be killed.
TEMP_SERVER_PID_ENV = "MULTIARCH_TEMP_SERVER_PID"


class PlatformsFailed(MultiarchError):
    """One or more platforms failed; nothing was published."""


def run_name() -> str:
    """`hello:latest [amd64, arm64]`: what is built, readable in the run list."""
    params = runtime.flow_run.parameters
    image = str(params.get("image", "?")).rsplit("/", 1)[-1]
    arches = [str(p).split("/", 1)[-1] for p in params.get("platforms", [])]
    return f"{image} [{', '.join(arches)}]"


def _stop_builds(*_: Any) -> None:
    """Cancelled or crashed: kill local steps, delete the Jobs this run created."""
    stop_everything()


@flow(
    name="build-multiarch-image",
    flow_run_name=run_name,
    log_prints=True,
    on_cancellation=[_stop_builds],
    on_crashed=[_stop_builds],
)
def build_multiarch_image(
    image: str,
    platforms: list[str],
    context: str,
    tags: list[str] | None = None,
    git_ref: str | None = None,
    containerfile: str | None = None,
    build_args: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    target: str | None = None,
    allow_emulation: bool = False,
    insecure_registry: bool = False,
    rebuild: str = "always",
    runner: RunnerOptions | None = None,
) -> BuildResult | State:
    """Build `image` for every platform in parallel and publish one multi-arch index.

    Args:
        image: Push target, registry/repository[:tag] (the registry host is required).
        platforms: Target platforms, os/arch[/variant], e.g. linux/amd64, linux/arm64.
        context: Build context: a local directory (local runner) or a git URL.
        tags: More tags for the same index.
        git_ref: Branch, tag or commit of a git context; pinned to one commit per run.
        containerfile: Containerfile path relative to the context (default: buildah's lookup).
        build_args: Build arguments (KEY: value); values reach buildah verbatim.
        labels: Image labels.
        target: Build stage to stop at.
        allow_emulation: Build platforms this host cannot run natively under QEMU (local).
        insecure_registry: Allow plain HTTP / unverified TLS for the registries of this build.
        rebuild: `always`, or `if-changed` to skip when the tag already holds the same source
            revision, Containerfile and build args, and base image digests.
        runner: Where builds run (`local` or `kubernetes`) and how; see docs/kubernetes.md.
    """
    request = validate_request(
        image=image,
        platforms=platforms,
        context=context,
        tags=tags or [],
        git_ref=git_ref,
        containerfile=containerfile,
        build_args=build_args or {},
        labels=labels or {},
        target=target,
        allow_emulation=allow_emulation,
        insecure_registry=insecure_registry,
        rebuild=rebuild,
        runner=runner or RunnerOptions(),
    )
    request = without_context_credentials(request, warn=get_run_logger().warning)
    tag_flow_run(request)
    try:
        with watch_for_cancellation():
            return build_and_publish(request)
    except (TerminationSignal, KeyboardInterrupt) as exc:
        return stop_and_cancel(exc)


def build_and_publish(request: BuildRequest) -> BuildResult:
    logger = get_run_logger()
    for note in [*preflight(request), *preflight_request(request)]:  # before any build
        logger.info(note)
    source = pin_source_task(request)
    if request.is_git:  # the target stage is readable once the commit is pinned
        for note in check_target(request, source):
            logger.info(note)
    wanted, decision = check_changes_task(request, source)
    if request.rebuild == "if-changed" and decision.up_to_date and decision.index_digest:
        return report_up_to_date(request, decision)
    dirs = run_dirs(request, run_id=str(runtime.flow_run.id or "local").replace("-", ""))
    with claim_run(dirs.work, run_record(request, dirs)), removing_run_dirs(request, dirs):
        for swept in sweep(dirs.work):
            logger.info(f"swept what a dead run left: {swept}")
        limited = limited_arch_tags(request.platforms)
        builds = [
            build_platform_task.with_options(tags=[arch_tag(p)] if arch_tag(p) in limited else [])
            .submit(request, source, p, dirs)
            for p in request.platforms
        ]
        images = collect_images(builds, request=request)
        annotations = wanted.annotations() if wanted else None
        raise_if_cancelling()
        result = publish_task(request, source, images, dirs, annotations=annotations)
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
    logger.info(f"published {result.pull_reference} as tags {', '.join(result.tags)}")
    return result


def stop_and_cancel(exc: BaseException) -> State:
    """Cancelled, by a signal or through the API: stop every build, end the run Cancelled."""
    stop_everything()
    how = signal_name(exc)
    message = f"cancelled ({how}): every build was stopped and nothing was published"
    get_run_logger().warning(message)
    return Cancelled(message=message)


def run_record(request: BuildRequest, dirs: RunDirs) -> RunRecord:
    """What a sweep must remove and close should this process die mid-run."""
    keep_shared = request.runner.keep_shared or request.runner.kind != "local"
    server_pid = os.environ.get(TEMP_SERVER_PID_ENV)
    return RunRecord(
        run_id=dirs.run_id,
        pid=os.getpid(),
        scratch=str(dirs.run_scratch),
        shared=None if keep_shared else str(dirs.run_shared),
        flow_run_id=str(runtime.flow_run.id) if runtime.flow_run.id else None,
        api_url=PREFECT_API_URL.value(),
        server_pid=int(server_pid) if server_pid else None,
    )


@contextlib.contextmanager
def removing_run_dirs(request: BuildRequest, dirs: RunDirs) -> Iterator[None]:
    """Whatever the outcome: build directories go, the handoff too unless kept.

    Builds still running (a signal, a cancel) are stopped first, so nothing writes into a
    directory after it is removed.
    """
    try:
        yield
    except BaseException:
        stop_everything()
        raise
    finally:
        cleanup_run(request, dirs)


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
                   request: BuildRequest) -> list[PlatformImage]:
    """Wait for every platform; raise one error listing each failed platform and why."""
    images: list[PlatformImage] = []
    failures: list[tuple[str, BaseException | str]] = []
    for platform, future in zip(request.platforms, futures, strict=True):
        future.wait()
        state = future.state
        if state.is_completed():
            images.append(future.result())
            continue
        reason = state.result(raise_on_failure=False)
        failures.append((str(platform), reason if isinstance(reason, BaseException)
                         else (state.message or state.name)))
    if failures:
        create_markdown_artifact(
            key=f"{artifact_key_for(request.image.name)}-failure",
            markdown=failure_markdown(str(request.image), failures),
            description=f"{request.image} failed",
        )
        raise PlatformsFailed(
            f"{len(failures)} of {len(futures)} platforms failed, nothing was published: "
            + "; ".join(str(reason) for _, reason in failures)
        )
    return images
