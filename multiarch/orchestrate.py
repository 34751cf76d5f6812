"""The one way a build runs: check, pin, decide, build every platform, publish, clean up.

`run_build` is that sequence, written once. The flow wraps it (flows/build.py): its
`Steps` run each unit as a Prefect task (retries, the UI, concurrency limits, cancellation)
and add artifacts. Where no Prefect server is wanted (the playground's base image, tests
of the core) `build_and_publish` runs the same sequence with plain calls, the platforms in
parallel threads. Either way a run claims its directories (a sweep can clean up after a
killed run), stops every build if it is interrupted, and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from multiarch import rebuild
from multiarch.attest import SupplyChainPlan, supply_plan
from multiarch.build_secrets import check_secret_blocks, check_secret_mounts
from multiarch.errors import MultiarchError
from multiarch.partial import Built, Failure, settle
from multiarch.preflight import (
    check_context,
    check_signing_block,
    check_target,
    preflight_request,
)
from multiarch.process import kill_scope_steps, step_scope
from multiarch.request import BuildRequest
from multiarch.results import BuildResult, PlatformImage
from multiarch.runclaim import RunRecord, claim_run, sweep
from multiarch.runners import LineLogger, RunContext, Runner, runner_for, stop_all
from multiarch.source import PinnedSource, pin_source
from multiarch.workspace import RunDirs, run_dirs


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """A published result, or (rebuild: if-changed) the decision that nothing changed."""

    result: BuildResult | None = None
    up_to_date: rebuild.Decision | None = None
    source: PinnedSource | None = None  # what was built (the published event names it)


class Steps(Protocol):
    """How the units of a run are executed: Prefect tasks, or plain calls."""

    log: LineLogger
    flow_run_id: str

    def pin_source(self, request: BuildRequest) -> PinnedSource: ...

    def check_changes(self, request: BuildRequest, source: PinnedSource
                      ) -> tuple[rebuild.Fingerprint | None, rebuild.Decision]: ...

    def build_all(self, request: BuildRequest, source: PinnedSource,
                  run: RunContext) -> Built:
        """Every platform at once, failures settled by `multiarch.partial.settle`: raises
        PlatformsFailed naming each failed platform unless only optional ones failed."""
        ...

    def publish(self, request: BuildRequest, source: PinnedSource,
                images: list[PlatformImage], run: RunContext,
                annotations: Mapping[str, str] | None,
                supply: SupplyChainPlan | None = None) -> BuildResult: ...

    def run_record(self, request: BuildRequest, dirs: RunDirs) -> RunRecord: ...

    def before_publish(self) -> None:
        """Last moment to give up (a cancellation that arrived while building)."""
        ...


def run_build(request: BuildRequest, steps: Steps, *, run_id: str) -> Outcome:
    with step_scope(run_id):  # a failure stops this build's steps, not a neighbour's
        return _run_build(request, steps, run_id=run_id)


def _run_build(request: BuildRequest, steps: Steps, *, run_id: str) -> Outcome:
    runner = runner_for(request.runner.kind)
    for note in [*runner.preflight(request), *preflight_request(request),
                 *check_signing_block(request),
                 *check_secret_blocks(request)]:  # before any build
        steps.log.info(note)
    source = steps.pin_source(request)
    if request.is_git:  # its tree (files, Containerfile, stages) is readable once pinned
        for note in [*check_context(request, source), *check_target(request, source),
                     *check_secret_mounts(request, source)]:
            steps.log.info(note)
    wanted, decision = steps.check_changes(request, source)
    if request.rebuild == "if-changed" and decision.up_to_date and decision.index_digest:
        return Outcome(up_to_date=decision)
    dirs = run_dirs(request, run_id)
    run = RunContext(dirs=dirs, flow_run_id=steps.flow_run_id, log=steps.log)
    with claim_run(dirs.work, steps.run_record(request, dirs)), \
            finishing(runner, request, run):
        for swept in sweep(dirs.work):
            steps.log.info(f"swept what a dead run left: {swept}")
        built = steps.build_all(request, source, run)
        annotations = wanted.annotations() if wanted else None
        supply = supply_plan(request, source, wanted, invocation_id=steps.flow_run_id or run_id)
        steps.before_publish()
        result = steps.publish(request, source, built.images, run, annotations, supply)
    if built.left_out:
        result = result.model_copy(update={"left_out": built.left_out})
    return Outcome(result=result, source=source)


def decide(request: BuildRequest, source: PinnedSource, *, info: Callable[[str], None],
           warn: Callable[[str], None]) -> tuple[rebuild.Fingerprint | None, rebuild.Decision]:
    """Does the tag already hold what this run would publish? With `rebuild: always` the
    fingerprint is only recorded, so failing to compute it (an unreachable base registry,
    say) must not stop the build."""
    try:
        wanted, decision = rebuild.check(request, source)
    except MultiarchError as exc:
        if request.rebuild != "always":
            raise
        warn(f"not recording a rebuild fingerprint: {exc}")
        return None, rebuild.Decision(up_to_date=False, reasons=(f"not checked: {exc}",))
    verdict = "up to date" if decision.up_to_date else "changed"
    info(f"{request.image}: {verdict}: {'; '.join(decision.reasons)}")
    return wanted, decision


@contextlib.contextmanager
def finishing(runner: Runner, request: BuildRequest, run: RunContext) -> Iterator[None]:
    """Whatever the outcome, the runner cleans up; interrupted, every build is stopped first,
    so nothing writes into a directory after it is removed."""
    try:
        yield
    except Exception:
        # This build failed: stop its own steps and what its runner started; other builds
        # of this process (a fleet runs several) go on.
        kill_scope_steps()
        runner.stop_build()
        raise
    except BaseException:  # interrupted (a signal, cancellation): everything stops
        stop_all()
        raise
    finally:
        runner.cleanup(request, run)


def run_record(request: BuildRequest, dirs: RunDirs, *, flow_run_id: str | None = None,
               api_url: str | None = None, server_pid: int | None = None) -> RunRecord:
    """What a sweep must remove and close should this process die mid-run."""
    keep_shared = request.runner.keep_shared or request.runner.kind != "local" \
        or request.handoff != "shared"
    return RunRecord(
        run_id=dirs.run_id, pid=os.getpid(), scratch=str(dirs.run_scratch),
        shared=None if keep_shared else str(dirs.run_shared),
        flow_run_id=flow_run_id, api_url=api_url, server_pid=server_pid,
    )


@dataclass(kw_only=True)
class PlainSteps:
    """Each unit as a plain call; platforms in parallel threads."""

    log: LineLogger
    flow_run_id: str = ""

    def pin_source(self, request: BuildRequest) -> PinnedSource:
        return pin_source(request)

    def check_changes(self, request: BuildRequest, source: PinnedSource
                      ) -> tuple[rebuild.Fingerprint | None, rebuild.Decision]:
        return decide(request, source, info=self.log.info, warn=self.log.info)

    def build_all(self, request: BuildRequest, source: PinnedSource,
                  run: RunContext) -> Built:
        runner = runner_for(request.runner.kind)
        with ThreadPoolExecutor(max_workers=len(request.platforms)) as pool:
            futures = [pool.submit(runner.build, request, source, p, run)
                       for p in request.platforms]
        outcomes = list(zip(request.platforms, futures, strict=True))
        failures: list[Failure] = [(p, error) for p, f in outcomes
                                   if (error := f.exception()) is not None]
        images = [f.result() for _, f in outcomes if f.exception() is None]
        return settle(request, images, failures,
                      warn=lambda line: self.log.info(f"WARNING: {line}"))

    def publish(self, request: BuildRequest, source: PinnedSource,
                images: list[PlatformImage], run: RunContext,
                annotations: Mapping[str, str] | None,
                supply: SupplyChainPlan | None = None) -> BuildResult:
        return runner_for(request.runner.kind).publish(request, source, images, run,
                                                       annotations, supply)

    def run_record(self, request: BuildRequest, dirs: RunDirs) -> RunRecord:
        return run_record(request, dirs)

    def before_publish(self) -> None:
        pass


def build_and_publish(request: BuildRequest, *, log: LineLogger,
                      run_id: str | None = None) -> BuildResult:
    """The whole run without Prefect (same sequence as the flow); returns what was published,
    or what the tag already holds when `rebuild: if-changed` finds nothing to do."""
    outcome = run_build(request, PlainSteps(log=log), run_id=run_id or uuid.uuid4().hex)
    if outcome.up_to_date is not None:
        assert outcome.up_to_date.index_digest is not None
        return rebuild.published_result(request, outcome.up_to_date.index_digest)
    assert outcome.result is not None
    return outcome.result
