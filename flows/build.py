"""`build-multiarch-image`: validate, pin the source, build every platform at once, publish.

Composition only; the work lives in `multiarch/`. Publish depends on every build: if one
platform fails, nothing is pushed and the failure names each platform and why.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from prefect.utilities.annotations import unmapped
from pydantic import ValidationError

from multiarch.errors import ConfigurationError, MultiarchError
from multiarch.reporting import artifact_key, markdown_summary, platform_rows
from multiarch.request import BuildRequest, RunnerOptions, describe_validation_error
from multiarch.results import BuildResult, PlatformImage
from multiarch.runners.dispatch import preflight, stop_everything
from multiarch.runners.local import run_dirs
from tasks.build import build_platform_task
from tasks.publish import publish_task
from tasks.source import pin_source_task


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
    runner: RunnerOptions | None = None,
) -> BuildResult:
    """Build `image` for every platform in parallel and publish one multi-arch index."""
    logger = get_run_logger()
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
        runner=runner or RunnerOptions(),
    )
    for note in preflight(request):
        logger.info(note)
    source = pin_source_task(request)
    dirs = run_dirs(request, run_id=str(runtime.flow_run.id or "local").replace("-", ""))
    builds = build_platform_task.map(
        request=unmapped(request),
        source=unmapped(source),
        platform=list(request.platforms),
        dirs=unmapped(dirs),
    )
    images = collect_images(list(builds))
    result = publish_task(request, source, images, dirs)
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


def validate_request(**fields: Any) -> BuildRequest:
    try:
        return BuildRequest(**fields)
    except ValidationError as exc:
        reason = describe_validation_error(exc)
        raise ConfigurationError(f"invalid build request: {reason}") from exc


def collect_images(futures: list[PrefectFuture[PlatformImage]]) -> list[PlatformImage]:
    """Wait for every platform; raise one error listing each failed platform and why."""
    images: list[PlatformImage] = []
    failures: list[str] = []
    for future in futures:
        future.wait()
        state = future.state
        if state.is_completed():
            images.append(future.result())
            continue
        reason = state.result(raise_on_failure=False)
        failures.append(
            str(reason) if isinstance(reason, BaseException) else (state.message or state.name)
        )
    if failures:
        raise PlatformsFailed(
            f"{len(failures)} of {len(futures)} platforms failed, nothing was published: "
            + "; ".join(failures)
        )
    return images
