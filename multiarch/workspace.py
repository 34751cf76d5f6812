"""Where one run keeps its files on the machine that runs the flow.

Every runner gets the same `RunDirs`: the local runner builds under `run_scratch` and (with
the shared handoff) exports to `run_shared`; the Kubernetes runner uses only the run id
here (its pods have their own volumes), and the work directory for locks and run records.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from multiarch.platforms import Platform
from multiarch.request import BuildRequest

DEFAULT_WORK_DIR = "/var/tmp/multiarch"  # noqa: S108 - a fixed, root-owned scratch root
WORK_DIR_ENV = "MULTIARCH_WORK_DIR"


def work_dir(explicit: str | None = None) -> Path:
    """The work directory: given, else $MULTIARCH_WORK_DIR, else /var/tmp/multiarch."""
    return Path(explicit or os.environ.get(WORK_DIR_ENV, DEFAULT_WORK_DIR)).resolve()


@dataclass(frozen=True, kw_only=True)
class RunDirs:
    """Where one run keeps its files on this machine."""

    work: Path
    shared: Path
    run_id: str

    @property
    def run_shared(self) -> Path:
        """The run's handoff directory (shared handoff): one layout per platform, the index."""
        return self.shared / self.run_id

    @property
    def run_scratch(self) -> Path:
        """The run's local scratch space: one directory per platform below it."""
        return self.work / "builds" / self.run_id

    def scratch(self, platform: Platform) -> Path:
        return self.run_scratch / platform.slug


def run_dirs(request: BuildRequest, run_id: str) -> RunDirs:
    work = work_dir(request.runner.work_dir)
    shared = Path(request.runner.shared_dir).resolve() if request.runner.shared_dir \
        else work / "shared"
    return RunDirs(work=work, shared=shared, run_id=run_id)
