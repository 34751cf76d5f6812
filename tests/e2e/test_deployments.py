"""prefect.yaml deployed by `make serve` and run by its process worker, end to end."""

from __future__ import annotations

import inspect
import json
import subprocess
from pathlib import Path

import pytest

from devtools import procfs
from flows.build import build_multiarch_image
from multiarch.ocispec import MEDIA_TYPE_INDEX
from multiarch.request import BuildRequest
from tests.e2e.conftest import REPO_ROOT, SERVE, run_deployment, timestamp
from tests.integration.conftest import skopeo_raw

pytestmark = pytest.mark.e2e

SLOW_CONTAINERFILE = """\
ARG BASE
FROM ${BASE}
RUN sleep 5 && uname -m > /etc/build-arch
"""
FLOW_PARAMETERS = set(inspect.signature(build_multiarch_image).parameters)


def example_params(playground, tag: str) -> dict:
    """The `build` deployment's example, pointed at the test registry."""
    return {
        "image": f"{playground.address}/e2e/hello:{tag}",
        "build_args": {"BASE": playground.base},
    }


def test_prefect_yaml_deploys_the_build_deployments(stack):
    build = stack.deployment("build")
    nightly = stack.deployment("nightly-rebuild")
    kube = stack.deployment("build-kubernetes")
    for deployment in (build, nightly, kube):
        assert deployment["entrypoint"] == "flows/build.py:build_multiarch_image"
        params = deployment["parameters"]
        unknown = set(params) - FLOW_PARAMETERS
        assert not unknown, f"{deployment['name']}: not flow parameters: {unknown}"
        # Valid as they stand (a relative context is relative to the repository root).
        context = params["context"]
        if "://" not in context:
            context = str(REPO_ROOT / context)
        BuildRequest.model_validate({**params, "context": context})
        assert "multiarch" in deployment["tags"]
    # The process deployments run in the repository root, resolved when deploying.
    for deployment in (build, nightly):
        assert deployment["work_pool_name"] == "multiarch-local"
        assert deployment["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}
        ]
    assert build["schedules"] == []
    assert build["parameters"]["context"] == "examples/hello"
    assert build["parameters"]["platforms"] == ["linux/amd64", "linux/arm64"]
    assert nightly["parameters"] == {**build["parameters"], "rebuild": "if-changed"}
    [schedule] = nightly["schedules"]
    assert schedule["schedule"]["cron"] == "0 3 * * *"
    assert schedule["schedule"]["timezone"] == "UTC"
    assert schedule["active"]
    assert kube["work_pool_name"] == "multiarch-k8s"
    assert kube["parameters"]["runner"]["kind"] == "kubernetes"
    assert (
        kube["job_variables"]["image"]
        == (kube["parameters"]["runner"]["kubernetes"]["builder_image"])
    )
    pools = {pool["name"]: pool["type"] for pool in stack.api("POST", "/work_pools/filter", {})}
    assert pools == {"multiarch-local": "process", "multiarch-k8s": "kubernetes"}
    # Every deployment of prefect.yaml, and nothing else (the fleet's are checked in
    # tests/e2e/test_fleet_trigger.py).
    entrypoints = {(d["name"], d["entrypoint"])
                   for d in stack.api("POST", "/deployments/filter", {})}
    assert entrypoints == {
        ("build", "flows/build.py:build_multiarch_image"),
        ("nightly-rebuild", "flows/build.py:build_multiarch_image"),
        ("build-kubernetes", "flows/build.py:build_multiarch_image"),
        ("nightly", "flows/fleet.py:rebuild_fleet"),
        ("dependents", "flows/fleet.py:rebuild_fleet"),
    }


def test_build_deployment_publishes_an_oci_index(stack, playground):
    flow_run_id, done = run_deployment(
        stack, "build", example_params(playground, "latest"), watch=True
    )
    run = stack.flow_run(flow_run_id)
    assert run["state"]["type"] == "COMPLETED", (
        f"{run['state']['message']}\n{done.stdout[-3000:]}\n{stack.logs()}"
    )
    assert done.returncode == 0
    index = json.loads(skopeo_raw(f"{playground.address}/e2e/hello:latest"))
    assert index["mediaType"] == MEDIA_TYPE_INDEX
    assert [m["platform"] for m in index["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
    ]


def test_bad_platform_fails_fast_naming_the_field(stack, playground):
    params = {**example_params(playground, "bad"), "platforms": ["linux/sparc"]}
    flow_run_id, done = run_deployment(stack, "build", params, watch=True)
    run = stack.flow_run(flow_run_id)
    assert run["state"]["type"] == "FAILED"
    assert done.returncode != 0
    assert "platforms.0" in run["state"]["message"], run["state"]["message"]
    assert "sparc" in run["state"]["message"]
    # Rejected while validating, before any build started.
    names = {task_run["name"] for task_run in stack.task_runs(flow_run_id)}
    assert not any(name.startswith("build") for name in names), names
    ran_for = timestamp(run["end_time"]) - timestamp(run["start_time"])
    assert ran_for.total_seconds() < 30, ran_for


def test_arm64_limit_serialises_arm64_builds_across_flow_runs(stack, playground, tmp_path):
    done = stack.prefect("concurrency-limit", "create", "arch-arm64", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert stack.api("GET", "/concurrency_limits/tag/arch-arm64")["concurrency_limit"] == 1
    # A build that takes a while, so the second run's arm64 build is ready long before the
    # first one's ends: without the limit they would overlap.
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "Containerfile").write_text(SLOW_CONTAINERFILE)

    # Queued back to back through the API (a CLI call takes seconds to start), so the
    # worker picks both up in the same poll and the flow runs run at the same time.
    deployment_id = stack.deployment("build")["id"]
    ids = [
        stack.api(
            "POST",
            f"/deployments/{deployment_id}/create_flow_run",
            {"parameters": {**example_params(playground, tag), "context": str(slow)}},
        )["id"]
        for tag in ("c1", "c2")
    ]
    runs = stack.wait_for(ids)
    for run in runs:
        assert run["state"]["type"] == "COMPLETED", f"{run['state']['message']}\n{stack.logs()}"

    builds = []
    for flow_run_id in ids:
        [arm64] = [t for t in stack.task_runs(flow_run_id) if t["name"] == "build linux/arm64"]
        assert "arch-arm64" in arm64["tags"]
        builds.append({key: timestamp(arm64[key]) for key in ("created", "start_time", "end_time")})
    first, second = sorted(builds, key=lambda build: build["start_time"])
    windows = [(str(b["start_time"]), str(b["end_time"])) for b in (first, second)]
    assert first["end_time"] <= second["start_time"], f"arm64 builds overlapped: {windows}"
    # ...and not by chance: the second build was waiting while the first one ran.
    assert second["created"] < first["end_time"], f"never waited for the limit: {builds}"


def test_serve_again_reuses_what_runs(stack):
    names = ["server", "worker"] + (["postgres"] if stack.database == "postgres" else [])
    pids = {
        name: (stack.state_dir / "serve" / f"{name}.pid").read_text().splitlines()[0]
        for name in names
    }
    done = subprocess.run(
        SERVE,
        cwd=REPO_ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"prefect server: already running (pid {pids['server']}" in done.stdout
    assert f"process worker: already running (pid {pids['worker']}" in done.stdout
    assert "work pool multiarch-local: exists" in done.stdout
    assert "build-multiarch-image/nightly-rebuild" in done.stdout
    assert f"http://127.0.0.1:{stack.port}" in done.stdout
    if stack.database == "postgres":
        assert f"postgres: already running (pid {pids['postgres']}" in done.stdout
        assert "database: PostgreSQL" in done.stdout
    else:
        assert "database: SQLite" in done.stdout


def test_serve_on_the_other_database_is_refused_while_one_runs(stack):
    other = "sqlite" if stack.database == "postgres" else "postgres"
    server_pid = (stack.state_dir / "serve" / "server.pid").read_text().splitlines()[0]
    done = subprocess.run(
        SERVE,
        cwd=REPO_ROOT,
        env={**stack.env, "MULTIARCH_DB": other},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    named = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
    assert (
        f"the Prefect server (pid {server_pid}) runs on {named[stack.database]}, "
        f"not {named[other]}: `make stop` first, then `make serve DB={other}`"
    ) in done.stderr
    # Nothing was started or switched: the same server still answers.
    assert stack.api("GET", "/health") is True
    if other == "postgres":
        assert not (stack.state_dir / "serve" / "postgres.pid").exists(), "postgres started"


def test_server_runs_on_the_chosen_database_with_no_password_in_sight(stack):
    pid = int((stack.state_dir / "serve" / "server.pid").read_text().splitlines()[0])
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    key = b"PREFECT_SERVER_DATABASE_CONNECTION_URL="
    urls = [item.removeprefix(key).decode() for item in environ if item.startswith(key)]
    if stack.database == "sqlite":
        assert urls == []
        assert (stack.prefect_home / "prefect.db").is_file()
        assert not (stack.state_dir / "postgres").exists()
        return
    password = (stack.state_dir / "postgres" / "password").read_text().strip()
    assert len(password) >= 24
    port = stack.env["MULTIARCH_POSTGRES_PORT"]
    assert urls == [f"postgresql+asyncpg://prefect:{password}@127.0.0.1:{port}/prefect"]
    assert not (stack.prefect_home / "prefect.db").exists(), "the server wrote SQLite"
    # The URL is in the server's environment alone: in no command line (`ps`), no log.
    cmdlines = [
        " ".join(procfs.cmdline(int(entry.name)))
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
    ]
    assert not [line for line in cmdlines if password in line]
    for log in (stack.state_dir / "serve").glob("*.log"):
        assert password not in log.read_text(errors="replace"), log
