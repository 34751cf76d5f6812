"""One build task per platform; Prefect retries it only for transient failures."""

from __future__ import annotations

from prefect import get_run_logger, runtime, task
from prefect.cache_policies import NONE

from multiarch.platforms import Platform
from multiarch.request import BuildRequest
from multiarch.results import PlatformImage
from multiarch.runners import RunContext, runner_for
from multiarch.source import PinnedSource
from multiarch.workspace import RunDirs
from tasks.retry import only_transient

BUILD_RETRIES = 2


@task(name="build", task_run_name="build {platform}", retries=BUILD_RETRIES,
      retry_delay_seconds=10, retry_condition_fn=only_transient, cache_policy=NONE)
def build_platform_task(request: BuildRequest, source: PinnedSource, platform: Platform,
                        dirs: RunDirs) -> PlatformImage:
    run = RunContext(dirs=dirs, flow_run_id=str(runtime.flow_run.id or ""),
                     log=get_run_logger())
    return runner_for(request.runner.kind).build(request, source, platform, run)
