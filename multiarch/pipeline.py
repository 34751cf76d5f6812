"""The whole build without Prefect: pin, build each platform in turn, publish.

The Prefect flow is the way to run builds; this plain sequence exists so the core stays
usable where no Prefect server is wanted (setting up the local base image, benchmarks).
"""

from __future__ import annotations

import shutil
import uuid

from multiarch.publish import publish_request
from multiarch.request import BuildRequest
from multiarch.results import BuildResult
from multiarch.runners.local import LineLogger, build_platform, preflight, run_dirs
from multiarch.source import pin_source


def build_and_publish(
    request: BuildRequest, *, log: LineLogger, run_id: str | None = None
) -> BuildResult:
    run_id = run_id or uuid.uuid4().hex
    for note in preflight(request):
        log.info(note)
    source = pin_source(request)
    dirs = run_dirs(request, run_id)
    images = [
        build_platform(request, source, platform, dirs=dirs, log=log)
        for platform in request.platforms
    ]
    result = publish_request(
        request, source, images, index_dir=dirs.run_shared / "index", emit=log.info
    )
    if not request.runner.keep_shared:
        shutil.rmtree(dirs.run_shared, ignore_errors=True)
    return result
