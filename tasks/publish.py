"""Publish the index once every platform has built, one run per repository at a time.

Two runs writing the same tags at once leave them split (issue 8). Runs that share a
Prefect server wait on a global concurrency limit named after the repository (limit 1,
created on first use), whichever machine or Job does the work; runs on one machine also
take the work directory's lock, which covers the CLI's private temporary server. Both
are held in the flow's process around the whole publish (push by digest, tag record,
tag writes, verification), so a Kubernetes publish Job is covered too: the flow waits
for the Job inside them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress

from prefect import get_client, get_run_logger, runtime, task
from prefect.cache_policies import NONE
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from multiarch.attest import SupplyChainPlan
from multiarch.errors import PublishError
from multiarch.publish_lock import publish_lock
from multiarch.request import BuildRequest
from multiarch.results import BuildResult, PlatformImage
from multiarch.runclaim import TEMP_SERVER_PID_ENV
from multiarch.runners import RunContext, runner_for
from multiarch.source import PinnedSource
from multiarch.workspace import RunDirs
from tasks.retry import only_transient

SLOT_ATTEMPT_S = 1.0  # one request for the slot; not granted: another run holds it
SLOT_WAIT_S = 1800.0  # longer than any publish takes


def limit_name(repository: str) -> str:
    """`publish:<registry/repository>`; Prefect forbids `/` in names, so it becomes `|`."""
    return "publish:" + repository.replace("/", "|")


def ensure_limit(name: str) -> None:
    """Create the limit (1 slot) unless it exists: a missing limit would not limit at all."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):  # another run created it a moment ago
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1))


@contextmanager
def serialised_publish(repository: str, dirs: RunDirs) -> Iterator[None]:
    """Hold the repository's Prefect concurrency slot and this machine's lock.

    On the CLI's temporary server only the lock is taken: that server lives on this machine,
    which the lock already covers, and it does not expire the lease of a run that was
    killed, so a slot taken there could stay taken for good.
    """
    logger = get_run_logger()
    with ExitStack() as held:
        if not on_temporary_server():
            name = limit_name(repository)
            ensure_limit(name)
            held.enter_context(prefect_slot(name, repository=repository, emit=logger.info))
        held.enter_context(publish_lock(dirs.work, repository, emit=logger.info))
        yield


def on_temporary_server() -> bool:
    return bool(os.environ.get(TEMP_SERVER_PID_ENV))


def prefect_slot(name: str, *, repository: str, emit: Callable[[str], None]
                 ) -> AbstractContextManager[None]:
    """The limit's one slot, asked for in short attempts so a cancellation is never stuck
    behind a blocked request; says once that it waits, and gives up after SLOT_WAIT_S."""
    deadline = time.monotonic() + SLOT_WAIT_S
    said = False
    while True:
        slot = ExitStack()
        try:
            slot.enter_context(concurrency(name, occupy=1, timeout_seconds=SLOT_ATTEMPT_S,
                                           strict=True))
            return slot
        except TimeoutError:
            if not said:
                emit(f"[publish] waiting for another publish of {repository} "
                     f"(Prefect limit {name!r})")
                said = True
            if time.monotonic() > deadline:
                raise PublishError(
                    f"waited {SLOT_WAIT_S:.0f} s for Prefect limit {name!r}: another publish "
                    "holds it, or one that was killed left it taken; see `prefect gcl inspect "
                    f"'{name}'`") from None


@task(name="publish", task_run_name="publish", retries=2, retry_delay_seconds=10,
      retry_condition_fn=only_transient, cache_policy=NONE)
def publish_task(request: BuildRequest, source: PinnedSource, images: list[PlatformImage],
                 dirs: RunDirs, annotations: dict[str, str] | None = None,
                 supply: SupplyChainPlan | None = None) -> BuildResult:
    with serialised_publish(request.image.name, dirs):
        run = RunContext(dirs=dirs, flow_run_id=str(runtime.flow_run.id or ""),
                         log=get_run_logger())
        return runner_for(request.runner.kind).publish(request, source, images, run,
                                                       annotations, supply)
