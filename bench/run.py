"""`python -m bench.run`: run B1 to B6 and write bench/results/latest.{json,md,png}.

BENCH_QUICK=1 runs a tiny version (a few MB, one repetition, no warm-up) in about a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    b1_publish,
    b2_overhead,
    b3_emulation,
    b4_cache,
    b5_supply_chain,
    b6_start_skew,
    report,
)
from bench.harness import LOG, Settings, machine_info, playground, settings_from_env

RESULTS = Path(__file__).with_name("results")
DEFAULT_WORK = Path("/var/tmp/multiarch-bench")


@contextlib.contextmanager
def prefect_server() -> Iterator[None]:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def run_benches(
    settings: Settings, *, base: str, registry: str, with_prefect: bool = True
) -> dict[str, Any]:
    """Run the chosen benchmarks against a playground that is already up."""
    started = time.perf_counter()
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(settings.work),
        "settings": {
            "quick": settings.quick, "reps": settings.reps, "warmup": settings.warmup,
            "sizes_mb": list(settings.sizes_mb), "random_fraction": settings.random_fraction,
            "b2_loops": [settings.b2_small_loops, settings.b2_large_loops],
            "b3_loops": settings.b3_loops, "b4_work": settings.b4_work,
            "benches": list(settings.benches),
        },
    }
    if "b1" in settings.benches:
        results["b1"] = b1_publish.bench(settings, base=base)
    if "b3" in settings.benches:
        results["b3"] = b3_emulation.bench(settings, base=base)
    if "b4" in settings.benches:
        results["b4"] = b4_cache.bench(settings, base=base, registry=registry)
    if "b5" in settings.benches:
        results["b5"] = b5_supply_chain.bench(settings, base=base, registry=registry)
    if "b6" in settings.benches:
        results["b6"] = b6_start_skew.bench(settings)
    if "b2" in settings.benches:
        server = prefect_server() if with_prefect else contextlib.nullcontext()
        with server:
            results["b2"] = b2_overhead.bench(settings, base=base, registry=registry)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["wall_s"] = time.perf_counter() - started
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("--only", default="b1,b2,b3,b4,b5,b6",
                        help="comma-separated: b1,b2,b3,b4,b5,b6")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    LOG.setLevel(logging.INFO)
    settings = settings_from_env(args.work_dir.resolve(), args.only.split(","))
    shutil.rmtree(settings.work, ignore_errors=True)
    settings.work.mkdir(parents=True)
    try:
        with playground(settings.work / "playground") as ground:
            results = run_benches(settings, base=ground.base, registry=ground.registry.address)
    finally:
        shutil.rmtree(settings.work, ignore_errors=True)
    paths = report.write_all(args.out, results)
    print(report.markdown(results))
    print(f"wrote {', '.join(str(p) for p in paths.values())} in {results['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
