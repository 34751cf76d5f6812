"""Decide, before any build, whether the tag already holds what this run would publish."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from multiarch import rebuild
from multiarch.errors import MultiarchError
from multiarch.request import BuildRequest
from multiarch.source import PinnedSource
from tasks.retry import only_transient


@task(name="check for changes", task_run_name="check for changes", retries=2,
      retry_delay_seconds=5, retry_condition_fn=only_transient, cache_policy=NONE)
def check_changes_task(request: BuildRequest, source: PinnedSource
                       ) -> tuple[rebuild.Fingerprint | None, rebuild.Decision]:
    """With `rebuild: always` the fingerprint is only recorded, so failing to compute it
    (an unreachable base registry, say) must not stop the build."""
    logger = get_run_logger()
    try:
        wanted, decision = rebuild.check(request, source)
    except MultiarchError as exc:
        if request.rebuild != "always":
            raise
        logger.warning(f"not recording a rebuild fingerprint: {exc}")
        return None, rebuild.Decision(up_to_date=False, reasons=(f"not checked: {exc}",))
    verdict = "up to date" if decision.up_to_date else "changed"
    logger.info(f"{request.image}: {verdict}: {'; '.join(decision.reasons)}")
    return wanted, decision
