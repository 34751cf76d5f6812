"""B2: orchestration overhead, the Prefect flow against a bare bash script.

Both do the same work on linux/amd64 (native): a fresh container storage, `buildah build`
of a context with one CPU-bound RUN step, export into an OCI layout, the project's
publish (push by digest, tag, verify), and removal of the scratch space. The flow runs
in-process against one Prefect test server; the bare script is `bench/bare_build.sh`.
A no-op flow with one task is timed too: the fixed cost of a flow run on this machine.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench.cpu_context import cpu_context
from bench.harness import LOG, Settings, run, summary

PLATFORMS = ("linux/amd64",)
BARE_SCRIPT = Path(__file__).with_name("bare_build.sh")


def run_flow(
    *, work: Path, context: Path, base: str, loops: int, image: str
) -> dict[str, float]:
    from flows.build import build_multiarch_image
    from multiarch.request import RunnerOptions

    started = time.perf_counter()
    result = build_multiarch_image(
        image=image, platforms=list(PLATFORMS), context=str(context),
        build_args={"BASE": base, "LOOPS": str(loops)}, insecure_registry=True,
        runner=RunnerOptions(work_dir=str(work)),
    )
    wall = time.perf_counter() - started
    build = max(p.duration_s for p in result.platforms)
    return {"wall_s": wall, "build_task_s": build}


def run_bare(*, work: Path, context: Path, base: str, loops: int, image: str) -> dict[str, float]:
    started = time.perf_counter()
    run(["bash", str(BARE_SCRIPT), str(work), str(context), base, str(loops), image,
         sys.executable, *PLATFORMS])
    return {"wall_s": time.perf_counter() - started}


def run_noop_flow() -> float:
    from prefect import flow, task

    @task
    def noop() -> int:
        return 1

    @flow(name="bench-noop")
    def noop_flow() -> int:
        return noop.submit().result()

    started = time.perf_counter()
    noop_flow()
    return time.perf_counter() - started


def bench_case(
    settings: Settings, *, name: str, loops: int, base: str, registry: str
) -> dict[str, Any]:
    root = settings.work / "b2" / name
    shutil.rmtree(root, ignore_errors=True)
    context = cpu_context(root / "context")
    flows: list[dict[str, float]] = []
    bares: list[dict[str, float]] = []
    for rep in range(settings.warmup + settings.reps):
        order = ("flow", "bare") if rep % 2 == 0 else ("bare", "flow")
        for variant in order:
            image = f"{registry}/bench/b2-{name}-{variant}:r{rep}"
            runner = run_flow if variant == "flow" else run_bare
            result = runner(work=root / variant, context=context, base=base, loops=loops,
                            image=image)
            LOG.info(f"b2 {name} rep {rep} {variant}: {result['wall_s']:.1f} s")
            if rep >= settings.warmup:
                (flows if variant == "flow" else bares).append(result)
    shutil.rmtree(root, ignore_errors=True)
    flow_wall = summary([r["wall_s"] for r in flows])
    bare_wall = summary([r["wall_s"] for r in bares])
    build_task = summary([r["build_task_s"] for r in flows])
    return {
        "name": name,
        "loops": loops,
        "platforms": list(PLATFORMS),
        "flow_s": flow_wall,
        "bare_s": bare_wall,
        "flow_build_task_s": build_task,
        "flow_outside_build_s": summary([r["wall_s"] - r["build_task_s"] for r in flows]),
        "ratio_flow_over_bare": flow_wall["median"] / bare_wall["median"],
        "difference_s": flow_wall["median"] - bare_wall["median"],
    }


def bench(settings: Settings, *, base: str, registry: str) -> dict[str, Any]:
    noop = [run_noop_flow() for _ in range(settings.warmup + settings.reps)][settings.warmup:]
    loops = {"small": settings.b2_small_loops, "large": settings.b2_large_loops}
    cases = [
        bench_case(settings, name=name, loops=loops[name], base=base, registry=registry)
        for name in settings.b2_cases
    ]
    return {"noop_flow_s": summary(noop), "cases": cases}
