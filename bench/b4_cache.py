"""B4: the registry cache, a cold build against a warm rebuild, per architecture.

The context has a heavy early RUN (gzip -9 of generated text: real CPU work, several
seconds natively, many more under QEMU) and a late COPY of a file changed before every
build. Each build is the project's own local build of one platform
(`multiarch.runners.local.runner.build_platform` with `cache: registry`: buildah build, then the
export into an OCI layout) on a fresh, empty container storage, as a node with an emptyDir
starts. Per repetition and architecture:

- cold: a cache repository nobody wrote yet (a new image name per repetition);
- warm: the same cache repository, the COPY file changed, a new empty storage again.

The warm build pulls the RUN layer instead of running it; `run_layer_reused` records that
the RUN layer's digest was indeed the cold build's, so the figure cannot come from a build
that silently ran everything again.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from bench.harness import LOG, Settings, summary
from multiarch.oci import blob_path
from multiarch.request import BuildRequest, RunnerOptions
from multiarch.runclaim import remove_tree
from multiarch.runners.local.runner import build_platform
from multiarch.source import pin_source
from multiarch.workspace import run_dirs

ARCHES = ("amd64", "arm64")
# The amount of work arrives in a file, not a stage ARG: buildah 1.28 does not look up the
# registry cache after an ARG inside a stage (containers/buildah#4315, fixed in 1.29), so
# with `ARG WORK` every step after it would run again and B4 would measure nothing.
CONTAINERFILE = """\
ARG BASE
FROM $BASE
COPY work /work
RUN seq -w 1 "$(cat /work)" | gzip -9 | sha256sum > /heavy
COPY changed.txt /changed.txt
"""


class _Quiet:
    def info(self, msg: str, /) -> None:
        pass


def make_context(dest: Path, *, work: int) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "Containerfile").write_text(CONTAINERFILE)
    (dest / "work").write_text(f"{work}\n")
    return dest


def timed_build(request: BuildRequest, *, changed: str) -> tuple[float, list[str]]:
    """One platform on a fresh store; returns seconds and the image's layer diff_ids."""
    (Path(request.context) / "changed.txt").write_text(changed + "\n")
    dirs = run_dirs(request, uuid.uuid4().hex)
    started = time.perf_counter()
    try:
        image = build_platform(request, pin_source(request), request.platforms[0], dirs=dirs,
                               log=_Quiet())
        seconds = time.perf_counter() - started
        layout = Path(image.layout)
        manifest = json.loads(blob_path(layout, image.digest).read_text())
        config = json.loads(blob_path(layout, manifest["config"]["digest"]).read_text())
        return seconds, config["rootfs"]["diff_ids"]
    finally:
        remove_tree(dirs.run_scratch)
        remove_tree(dirs.run_shared)


def bench_arch(settings: Settings, *, arch: str, rep: int, context: Path, base: str,
               registry: str) -> dict[str, Any]:
    request = BuildRequest(
        image=f"{registry}/bench/b4-{arch}-r{rep}:latest", platforms=(f"linux/{arch}",),
        context=str(context), build_args={"BASE": base},
        cache="registry", allow_emulation=True, insecure_registry=True,
        runner=RunnerOptions(work_dir=str(settings.work / "b4" / "work")),
    )
    cold_s, cold_layers = timed_build(request, changed=f"cold {rep}")
    warm_s, warm_layers = timed_build(request, changed=f"warm {rep}")
    reused = cold_layers[-2] == warm_layers[-2] and cold_layers[-1] != warm_layers[-1]
    LOG.info(f"b4 rep {rep} linux/{arch}: cold {cold_s:.1f} s, warm {warm_s:.1f} s, "
             f"RUN layer reused: {reused}")
    return {"cold_s": cold_s, "warm_s": warm_s, "reused": reused}


def bench(settings: Settings, *, base: str, registry: str) -> dict[str, Any]:
    root = settings.work / "b4"
    shutil.rmtree(root, ignore_errors=True)
    context = make_context(root / "context", work=settings.b4_work)
    runs: dict[str, list[dict[str, Any]]] = {arch: [] for arch in ARCHES}
    try:
        for rep in range(settings.warmup + settings.reps):
            order = ARCHES if rep % 2 == 0 else tuple(reversed(ARCHES))
            for arch in order:
                result = bench_arch(settings, arch=arch, rep=rep, context=context, base=base,
                                    registry=registry)
                if rep >= settings.warmup:
                    runs[arch].append(result)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"work": settings.b4_work, "arches": [arch_summary(arch, runs[arch])
                                                 for arch in ARCHES]}


def arch_summary(arch: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    cold = summary([r["cold_s"] for r in runs])
    warm = summary([r["warm_s"] for r in runs])
    return {
        "platform": f"linux/{arch}",
        "cold_s": cold,
        "warm_s": warm,
        "ratio_cold_over_warm": cold["median"] / warm["median"],
        "run_layer_reused": sum(r["reused"] for r in runs),
        "runs": len(runs),
    }

