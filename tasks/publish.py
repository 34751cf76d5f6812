"""Publish the index once every platform has built."""

from __future__ import annotations

from prefect import get_run_logger, runtime, task
from prefect.cache_policies import NONE

from multiarch.request import BuildRequest
from multiarch.results import BuildResult, PlatformImage
from multiarch.runners import dispatch
from multiarch.runners.local import RunDirs
from multiarch.source import PinnedSource
from tasks.retry import only_transient


@task(name="publish", task_run_name="publish", retries=2, retry_delay_seconds=10,
      retry_condition_fn=only_transient, cache_policy=NONE)
def publish_task(request: BuildRequest, source: PinnedSource, images: list[PlatformImage],
                 dirs: RunDirs, annotations: dict[str, str] | None = None) -> BuildResult:
    return dispatch.publish(request, source, images, dirs=dirs,
                            flow_run_id=str(runtime.flow_run.id or ""), log=get_run_logger(),
                            annotations=annotations)
