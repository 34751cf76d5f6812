"""B6: start skew of builds that share a task concurrency tag, on SQLite vs PostgreSQL.

Per backend, a stack from `python -m devtools serve` (`make serve`, MULTIARCH_DB=sqlite or
postgres) under a temporary state dir; its arch-amd64 limit is 2, then 4. Two client
processes (the flow runs) wait for the same wall-clock instant and each runs a flow whose
tasks are tagged arch-amd64 and named like the project's builds: with the limit at least
the number of tasks, nothing should wait, so every task run should start at the same moment.
A baseline runs the same with a tag that has no limit (no slot lease to take).
The skew is max - min of their Prefect start_time (set when the server accepts the Running
state, i.e. after the task's concurrency slot lease was granted), per repetition. Clients
start on a wall-clock barrier, not through the worker, so the worker's polling and process
start-up are not in the figure: what is left is the server's leases and state writes (where
SQLite serialises every writer). The first repetition of each client is a warm-up.

Also timed: `make serve` until ready, cold (fresh state dir: a new SQLite file, or initdb of
the cluster) and warm (served again after `make stop`, the cluster and data kept).

    PYTHONPATH=. .venv/bin/python -m bench.run --only b6     (BENCH_QUICK=1: 2 repetitions)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.harness import LOG, Settings, summary
from devtools.registry import free_port

BACKENDS = ("sqlite", "postgres")
TAG = "arch-amd64"
HOLD_S = 1.0  # each task holds its slot this long
PERIOD_S = 8.0  # between repetitions: room for a slow one to finish
CLIENTS = 2  # flow runs started together
# (tag, its limit, tasks per flow run): 2 or 4 builds that the limit admits together, and
# a baseline of 2 whose tag has no limit (no slot lease: the state writes alone).
LAYOUTS = ((TAG, 2, 1), (TAG, 4, 2), ("b6-no-limit", None, 1))
REPO = Path(__file__).resolve().parents[1]
PREFECT = Path(sys.executable).parent / "prefect"
HEALTHY = re.compile(r"prefect server: healthy after ([0-9.]+) s")


def bench(settings: Settings) -> dict[str, Any]:
    reps = 2 if settings.quick else 10
    results: dict[str, Any] = {
        "clients": CLIENTS, "hold_s": HOLD_S, "tag": TAG, "reps": reps, "backends": {},
    }  # fmt: skip
    for backend in BACKENDS:
        results["backends"][backend] = bench_backend(settings, backend, reps)
    sqlite, pg = (results["backends"][b] for b in BACKENDS)
    for layout in sqlite["skew"]:
        ratio = sqlite["skew"][layout]["median"] / max(pg["skew"][layout]["median"], 1e-6)
        results.setdefault("ratio_sqlite_over_postgres", {})[layout] = ratio
    return results


def bench_backend(settings: Settings, backend: str, reps: int) -> dict[str, Any]:
    # Mode 0711: as root PostgreSQL runs as the postgres user, who must pass through.
    state_dir = Path(tempfile.mkdtemp(prefix=f"b6-{backend}-", dir=settings.work))
    state_dir.chmod(0o711)
    env = stack_env(state_dir, backend)
    out: dict[str, Any] = {"skew": {}, "raw": {}}
    try:
        out["serve_cold"] = serve(env)
        for tag, limit, tasks in LAYOUTS:
            if limit is not None:
                set_limit(env, limit)
            layout = f"{CLIENTS * tasks} builds, " + (f"limit {limit}" if limit else "no limit")
            skews = measure_skew(env, reps=reps, tasks=tasks, tag=tag)
            out["skew"][layout] = summary(skews)
            LOG.info("B6 %s %s: skew median %.3f s max %.3f s", backend, layout,
                     out["skew"][layout]["median"], out["skew"][layout]["max"])
        stop(env)
        out["serve_warm"] = serve(env)
    finally:
        stop(env)
        shutil.rmtree(state_dir, ignore_errors=True)
    return out


def stack_env(state_dir: Path, backend: str) -> dict[str, str]:
    port = free_port()
    env = {
        **os.environ,
        "MULTIARCH_STATE_DIR": str(state_dir),
        "MULTIARCH_DB": backend,
        "MULTIARCH_POSTGRES_PORT": str(free_port()),
        "PREFECT_PORT": str(port),
        "PREFECT_BIN": str(PREFECT),
        "PREFECT_HOME": str(state_dir / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "AMD64_LIMIT": "2",
        "PYTHONPATH": str(REPO),
    }
    env.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
    return env


def serve(env: dict[str, str]) -> dict[str, float]:
    """`make serve`'s command: wall time until it returns (everything ready), and until the
    server answered /health (its own line)."""
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "devtools", "serve"], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=900, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"devtools serve failed:\n{done.stdout}\n{done.stderr}")
    healthy = HEALTHY.search(done.stdout)
    return {"ready_s": wall, "server_healthy_s": float(healthy.group(1)) if healthy else wall}


def stop(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "devtools", "stop"], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=300, check=False,
    )  # fmt: skip


def set_limit(env: dict[str, str], limit: int) -> None:
    subprocess.run(
        [str(PREFECT), "--no-prompt", "concurrency-limit", "create", TAG, str(limit)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip


def measure_skew(env: dict[str, str], *, reps: int, tasks: int, tag: str) -> list[float]:
    """Start CLIENTS client processes on one barrier; the skew of each repetition."""
    at = time.time() + 15  # the clients import prefect meanwhile
    argv = [sys.executable, "-m", "bench.b6_start_skew", "client", str(at), str(reps + 1),
            str(tasks), tag]  # fmt: skip
    clients = [
        subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(CLIENTS)
    ]
    outputs = [client.communicate(timeout=120 + (reps + 1) * PERIOD_S * 3)[0] for client in clients]
    if any(client.returncode != 0 for client in clients):
        raise RuntimeError(f"a B6 client failed: {outputs}")
    flow_runs = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    skews = []
    for rep in range(1, reps + 1):  # repetition 0 warms each client up
        starts = [start for runs in flow_runs for start in task_starts(env, runs[rep], tag)]
        if len(starts) != CLIENTS * tasks:
            raise RuntimeError(f"B6: {len(starts)} task start times, {CLIENTS * tasks} expected")
        skews.append(max(starts) - min(starts))
    return skews


def task_starts(env: dict[str, str], flow_run_id: str, tag: str) -> list[float]:
    import httpx

    with httpx.Client(base_url=env["PREFECT_API_URL"], timeout=30, trust_env=False) as client:
        response = client.post(
            "/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}}}
        )
    response.raise_for_status()
    return [
        datetime.fromisoformat(run["start_time"].replace("Z", "+00:00")).timestamp()
        for run in response.json()
        if tag in run["tags"]
    ]


def client(at: float, runs: int, tasks: int, tag: str) -> None:
    """One flow run per repetition, each at `at + i * PERIOD_S`; prints the flow run ids."""
    from prefect import flow, task
    from prefect.futures import wait

    @task(tags=[tag])
    def build(platform: str) -> None:
        time.sleep(HOLD_S)

    @flow(name="b6-start-skew", log_prints=False)
    def probe(tasks: int) -> None:
        names = [f"build linux/amd64 #{index}" for index in range(tasks)]
        wait([build.with_options(name=name).submit("linux/amd64") for name in names])

    ids = []
    for rep in range(runs):
        time.sleep(max(0.0, at + rep * PERIOD_S - time.time()))
        state = probe(tasks, return_state=True)
        ids.append(str(state.state_details.flow_run_id))
    print(json.dumps(ids), flush=True)


def main(argv: Sequence[str]) -> int:
    if len(argv) == 5 and argv[0] == "client":
        client(float(argv[1]), int(argv[2]), int(argv[3]), argv[4])
        return 0
    print("usage: python -m bench.b6_start_skew client AT RUNS TASKS TAG", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
