"""Pin the source once, before the per-platform fan-out."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from multiarch.request import BuildRequest
from multiarch.source import PinnedSource, pin_source
from tasks.retry import only_transient


@task(
    name="pin source",
    task_run_name="pin source",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=only_transient,
    cache_policy=NONE,
)
def pin_source_task(request: BuildRequest) -> PinnedSource:
    return pin_source(request)
