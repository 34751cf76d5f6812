"""Pick the runner a request asks for; the flow and tasks call only these functions.

The Kubernetes client is imported only when a request uses the kubernetes runner, so a
local build never pays for it (and `multiarch.runners.kubernetes` stays the one module
that touches the cluster).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from multiarch.platforms import Platform
from multiarch.process import kill_all_steps
from multiarch.publish import publish_request
from multiarch.request import BuildRequest
from multiarch.results import BuildResult, PlatformImage
from multiarch.runclaim import RUNS_DIR
from multiarch.runners import local
from multiarch.runners.local import LineLogger, RunDirs
from multiarch.source import PinnedSource
from multiarch.tagjournal import journal_path


def preflight(request: BuildRequest) -> list[str]:
    if request.runner.kind == "kubernetes":
        from multiarch.runners import kubernetes

        return kubernetes.preflight(request.runner.kubernetes)
    return local.preflight(request)


def build(request: BuildRequest, source: PinnedSource, platform: Platform, *, dirs: RunDirs,
          flow_run_id: str, log: LineLogger) -> PlatformImage:
    if request.runner.kind == "kubernetes":
        from multiarch.runners import kubernetes

        return kubernetes.build_platform_job(request, source, platform, run_id=dirs.run_id,
                                             flow_run_id=flow_run_id, emit=log.info)
    return local.build_platform(request, source, platform, dirs=dirs, log=log)


def publish(request: BuildRequest, source: PinnedSource, images: list[PlatformImage], *,
            dirs: RunDirs, flow_run_id: str, log: LineLogger,
            annotations: Mapping[str, str] | None = None) -> BuildResult:
    if request.runner.kind == "kubernetes":
        from multiarch.runners import kubernetes

        return kubernetes.publish_job_run(request, source, images, run_id=dirs.run_id,
                                          flow_run_id=flow_run_id, emit=log.info,
                                          annotations=annotations)
    return publish_request(request, source, images, index_dir=dirs.run_shared / "index",
                           emit=log.info, annotations=annotations,
                           journal=journal_path(dirs.work / RUNS_DIR, dirs.run_id))


def cleanup_run(request: BuildRequest, dirs: RunDirs) -> None:
    """After any outcome: this machine's build directories, and the local handoff unless kept.

    (A Kubernetes run's handoff lives on the cluster's volume; its publish Job removes it.)
    """
    local.remove_run_dirs(dirs, keep_shared=request.runner.keep_shared
                          or request.runner.kind != "local")


def stop_everything() -> None:
    """Cancellation or crash: kill local steps and delete the Jobs this process created."""
    kill_all_steps()
    kubernetes = sys.modules.get("multiarch.runners.kubernetes")
    if kubernetes is not None:
        kubernetes.delete_all_jobs()
