"""Where builds run: one `Runner` protocol, and the registry of runners by kind.

The flow, the tasks and the CLI call only `runner_for(kind)` and `stop_all()`; a runner's
module (and its client libraries: the Kubernetes client is heavy) is imported the first
time a request asks for it, so a local build never pays for Kubernetes. A new runner is
one package under runners/ with a `RUNNER` object, plus one line in RUNNERS (and its
options on `RunnerOptions` when it has any).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from multiarch.attest import SupplyChainPlan
    from multiarch.platforms import Platform
    from multiarch.request import BuildRequest
    from multiarch.results import BuildResult, PlatformImage
    from multiarch.source import PinnedSource
    from multiarch.workspace import RunDirs

# kind -> the module that defines RUNNER
RUNNERS: dict[str, str] = {
    "local": "multiarch.runners.local.runner",
    "kubernetes": "multiarch.runners.kubernetes.runner",
}


class LineLogger(Protocol):
    def info(self, msg: str, /) -> None: ...


@dataclass(frozen=True, kw_only=True)
class RunContext:
    """What every runner gets about the run besides the request: the same for all kinds."""

    dirs: RunDirs
    flow_run_id: str
    log: LineLogger

    @property
    def run_id(self) -> str:
        return self.dirs.run_id


class Runner(Protocol):
    def preflight(self, request: BuildRequest) -> list[str]:
        """Before any build: can this runner build the request? Notes for the log."""
        ...

    def build(self, request: BuildRequest, source: PinnedSource, platform: Platform,
              run: RunContext) -> PlatformImage:
        """Build one platform and hand its image over (request.handoff)."""
        ...

    def publish(self, request: BuildRequest, source: PinnedSource,
                images: list[PlatformImage], run: RunContext,
                annotations: Mapping[str, str] | None = None,
                supply: SupplyChainPlan | None = None) -> BuildResult:
        """One index over the images, attestations attached and checked, tags written all
        or nothing, verified."""
        ...

    def cleanup(self, request: BuildRequest, run: RunContext) -> None:
        """After any outcome: what the run left on the flow's machine."""
        ...

    def stop(self) -> None:
        """Cancellation or crash: stop everything this process started, at once."""
        ...

    def stop_build(self) -> None:
        """This build failed: stop what it started elsewhere (its step scope, see
        multiarch.process.step_scope), leaving the other builds of the process running."""
        ...


_started: dict[str, Runner] = {}
_started_lock = threading.Lock()


def runner_for(kind: str) -> Runner:
    """The runner of a kind, imported on first use."""
    with _started_lock:
        if kind not in _started:
            if kind not in RUNNERS:
                raise KeyError(f"no runner {kind!r}; known: {', '.join(RUNNERS)}")
            _started[kind] = importlib.import_module(RUNNERS[kind]).RUNNER
        return _started[kind]


def stop_all() -> None:
    """Stop every build of this process: local steps (the process layer), then whatever
    each runner used so far started elsewhere (Jobs)."""
    from multiarch.process import kill_all_steps

    kill_all_steps()
    with _started_lock:
        started = list(_started.values())
    for runner in started:
        runner.stop()
