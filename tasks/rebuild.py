"""Decide, before any build, whether the tag already holds what this run would publish."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from multiarch import rebuild
from multiarch.orchestrate import decide
from multiarch.request import BuildRequest
from multiarch.source import PinnedSource
from tasks.retry import only_transient


@task(name="check for changes", task_run_name="check for changes", retries=2,
      retry_delay_seconds=5, retry_condition_fn=only_transient, cache_policy=NONE)
def check_changes_task(request: BuildRequest, source: PinnedSource
                       ) -> tuple[rebuild.Fingerprint | None, rebuild.Decision]:
    logger = get_run_logger()
    return decide(request, source, info=logger.info, warn=logger.warning)
