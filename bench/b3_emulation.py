"""B3: native against emulated, the same CPU-bound RUN step built for amd64 and arm64.

Each architecture keeps one container storage (the base image is pulled once, in the
warm-up); buildah does not cache layers by default, so every build runs the RUN step.
The time is the whole `buildah build`, so its fixed cost (~1 s) dilutes the ratio a little.
"""

from __future__ import annotations

import shutil
from typing import Any

from bench.cpu_context import cpu_context
from bench.harness import LOG, Settings, Store, buildah_build, summary

ARCHES = ("amd64", "arm64")


def bench(settings: Settings, *, base: str) -> dict[str, Any]:
    root = settings.work / "b3"
    shutil.rmtree(root, ignore_errors=True)
    context = cpu_context(root / "context")
    stores = {arch: Store(root=root / f"store-{arch}") for arch in ARCHES}
    times: dict[str, list[float]] = {arch: [] for arch in ARCHES}
    try:
        for rep in range(settings.warmup + settings.reps):
            order = ARCHES if rep % 2 == 0 else tuple(reversed(ARCHES))
            for arch in order:
                seconds = buildah_build(
                    stores[arch], context=context, platform_text=f"linux/{arch}",
                    tag=f"localhost/bench/b3:{arch}",
                    build_args={"BASE": base, "LOOPS": str(settings.b3_loops)},
                )
                LOG.info(f"b3 rep {rep} linux/{arch}: {seconds:.1f} s")
                if rep >= settings.warmup:
                    times[arch].append(seconds)
    finally:
        for store in stores.values():
            store.remove()
        shutil.rmtree(root, ignore_errors=True)
    native, emulated = summary(times["amd64"]), summary(times["arm64"])
    return {
        "loops": settings.b3_loops,
        "native_amd64_s": native,
        "emulated_arm64_s": emulated,
        "ratio_emulated_over_native": emulated["median"] / native["median"],
    }
