"""The deployments as an operator runs them: `make serve`, `prefect deploy`, a worker.

One real Prefect server and one process worker for the module, started by the same
command as `make serve` (`python -m devtools serve`), on a free port with all state under a
temporary directory, and stopped by the same command as `make stop`. The `stack` fixture is
parametrised over the server's database, SQLite and PostgreSQL (`make serve DB=postgres`,
its own cluster on a free port): every test that uses it runs on both. The registry and the
base image come from the session's `playground` fixture (tests/sessions.py).
`kubernetes_worker` adds a Prefect Kubernetes worker for the stack's multiarch-k8s pool,
against the session's test cluster (tests/cluster).
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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools import procfs, supervisor
from devtools.registry import free_port
from tests.sessions import REPO_ROOT, Playground

SERVE = [sys.executable, "-m", "devtools", "serve"]
STOP = [sys.executable, "-m", "devtools", "stop"]
PREFECT = Path(sys.executable).parent / "prefect"
SERVE_TIMEOUT_S = 600
RUN_TIMEOUT_S = 900
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass(frozen=True)
class Stack:
    """A Prefect server and worker started by `make serve`'s command, and how to reach them."""

    state_dir: Path
    port: int
    env: dict[str, str]
    serve_output: str
    database: str = "sqlite"  # or "postgres"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def prefect_home(self) -> Path:
        return self.state_dir / "prefect"

    def prefect(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The prefect CLI against this server, from the repository root."""
        return subprocess.run(
            [str(PREFECT), "--no-prompt", *args],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def api(self, method: str, path: str, body: Any = None) -> Any:
        with httpx.Client(base_url=self.api_url, timeout=30, trust_env=False) as client:
            response = client.request(method, path, json=body)
        response.raise_for_status()
        return response.json()

    def flow_run(self, flow_run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/flow_runs/{flow_run_id}")

    def task_runs(self, flow_run_id: str) -> list[dict[str, Any]]:
        return self.api("POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})

    def deployment(self, name: str, flow: str = "build-multiarch-image") -> dict[str, Any]:
        return self.api("GET", f"/deployments/name/{flow}/{name}")

    def wait_for(self, flow_run_ids: list[str], timeout_s: float = RUN_TIMEOUT_S) -> list[dict]:
        """Poll until every flow run is in a terminal state; return them in order."""
        deadline = time.monotonic() + timeout_s
        while True:
            runs = [self.flow_run(run_id) for run_id in flow_run_ids]
            if all(run["state"]["type"] in TERMINAL for run in runs):
                return runs
            if time.monotonic() > deadline:
                states = {run["id"]: run["state"]["type"] for run in runs}
                pytest.fail(f"flow runs not finished after {timeout_s} s: {states}\n{self.logs()}")
            time.sleep(2)

    def logs(self) -> str:
        """The last lines of the worker and server logs, for failure messages."""
        parts = []
        for name in ("worker", "server"):
            path = self.state_dir / "serve" / f"{name}.log"
            lines = path.read_text(errors="replace").splitlines() if path.exists() else []
            parts.append(f"--- {path} (last 40 lines)\n" + "\n".join(lines[-40:]))
        return "\n".join(parts)


def run_deployment(
    stack: Stack, deployment: str, params: dict[str, Any], *, watch: bool,
    job_variables: dict[str, Any] | None = None, flow: str = "build-multiarch-image",
) -> tuple[str, subprocess.CompletedProcess[str]]:
    """`prefect deployment run` with one --param per parameter and one --job-variable per
    job variable (JSON values)."""
    args = ["deployment", "run", f"{flow}/{deployment}"]
    for name, value in params.items():
        args += ["--param", f"{name}={json.dumps(value)}"]
    for name, value in (job_variables or {}).items():
        args += ["--job-variable", f"{name}={json.dumps(value)}"]
    if watch:
        args += ["--watch", "--watch-interval", "2", "--watch-timeout", str(RUN_TIMEOUT_S)]
    done = stack.prefect(*args, timeout=RUN_TIMEOUT_S + 60)
    found = re.search(r"UUID: ([0-9a-f-]{36})", done.stdout)
    assert found, f"no flow run created: {done.stdout}\n{done.stderr}"
    return found.group(1), done


def timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def processes_with_home(prefect_home: Path) -> list[str]:
    """Processes started for this stack (they all carry its PREFECT_HOME)."""
    marker = f"PREFECT_HOME={prefect_home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if marker in environ and state not in {"Z", "X"}:
            found.append(f"{entry.name}: {cmdline}")
    return found


DATABASES = ["sqlite", "postgres"]


def postgres_processes(state_dir: Path, postmaster: int | None) -> list[str]:
    """What is left of the stack's PostgreSQL: its postmaster's group, or any process
    whose command line names its cluster."""
    data_dir = str(state_dir / "postgres" / "data")
    found = []
    pids = set(procfs.group_members(postmaster)) if postmaster else set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and data_dir in " ".join(procfs.cmdline(int(entry.name))):
            pids.add(int(entry.name))
    for pid in sorted(pids):
        if procfs.is_alive(pid):
            found.append(f"{pid}: {' '.join(procfs.cmdline(pid))}")
    return found


def state_dir_for(database: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pytest's temporary dirs are mode 0700 under /tmp/pytest-of-root: when we are root,
    PostgreSQL runs as the postgres user, who must pass through to the cluster."""
    if database != "postgres" or os.geteuid() != 0:
        return tmp_path_factory.mktemp("serve")
    path = Path(tempfile.mkdtemp(prefix="multiarch-e2e-pg-"))
    path.chmod(0o711)
    return path


# Module scope: stopped as soon as these tests are done, not left polling while the rest
# of the suite runs on the same (small) machine. One stack per database, one after the other.
@pytest.fixture(scope="module", params=DATABASES, ids=DATABASES)
def stack(
    request: pytest.FixtureRequest,
    playground: Playground,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    database: str = request.param
    state_dir = state_dir_for(database, tmp_path_factory)
    port = free_port()
    env = {
        **os.environ,
        "MULTIARCH_STATE_DIR": str(state_dir),
        "MULTIARCH_WORK_DIR": str(state_dir / "work"),
        "MULTIARCH_DB": database,
        "MULTIARCH_POSTGRES_PORT": str(free_port()),
        "PREFECT_PORT": str(port),
        "PREFECT_BIN": str(PREFECT),
        "MULTIARCH_REGISTRY_PORT": str(playground.registry.port),
        "ARM64_LIMIT": "1",
        "AMD64_LIMIT": "2",
        "PREFECT_WORKER_QUERY_SECONDS": "2",  # pick runs up sooner than the default 10 s
        "PREFECT_HOME": str(state_dir / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
    }
    env.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
    try:
        done = subprocess.run(
            SERVE,
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=SERVE_TIMEOUT_S,
            check=False,
        )
        stack = Stack(
            state_dir=state_dir, port=port, env=env, serve_output=done.stdout, database=database
        )
        assert done.returncode == 0, f"devtools serve failed:\n{done.stdout}\n{done.stderr}"
        yield stack
    finally:
        record = supervisor.read_record(state_dir / "serve" / "postgres.pid")
        stopped = subprocess.run(
            STOP, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        left = processes_with_home(state_dir / "prefect")
        left += postgres_processes(state_dir, record.pid if record else None)
        try:
            assert stopped.returncode == 0, (
                f"devtools stop failed:\n{stopped.stdout}{stopped.stderr}"
            )
            assert not left, "processes left behind by devtools stop:\n" + "\n".join(left)
            assert not list((state_dir / "serve").glob("*.pid")), "pid files left behind"
        finally:
            if database == "postgres" and not left:
                shutil.rmtree(state_dir, ignore_errors=True)


KUBERNETES_POOL = "multiarch-k8s"
KUBERNETES_WORKER = "multiarch-k8s-e2e"


@dataclass(frozen=True)
class KubernetesWorker:
    """`prefect worker start --type kubernetes` for the stack's multiarch-k8s pool."""

    log_file: Path
    pid: int

    def log(self, lines: int = 60) -> str:
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return f"--- {self.log_file} (last {lines} lines)\n" + "\n".join(
            text.splitlines()[-lines:])


def worker_heartbeat(stack: Stack, *, since: float) -> bool:
    workers = stack.api("POST", f"/work_pools/{KUBERNETES_POOL}/workers/filter", {})
    return any(
        found["name"] == KUBERNETES_WORKER and found.get("last_heartbeat_time")
        and timestamp(found["last_heartbeat_time"]).timestamp() >= since - 1
        for found in workers
    )


@pytest.fixture(scope="module")
def kubernetes_worker(stack: Stack, kube_session: Any) -> Iterator[KubernetesWorker]:
    """The pool's worker as an operator runs it next to a cluster: outside it, with the
    admin kubeconfig in KUBECONFIG (prefect-kubernetes tries the in-cluster config first,
    then the kubeconfig). The flow-run pods it creates get the worker's Prefect settings
    (PREFECT_API_URL on 127.0.0.1 is reachable: pods share the host's network) and run
    as the template's ServiceAccount multiarch-builder, with their own in-cluster access."""
    from devtools import supervisor

    env = {**stack.env, "KUBECONFIG": str(kube_session.admin_kubeconfig)}
    for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        env.pop(name, None)
    service = supervisor.Service(
        name="k8s-worker",
        argv=(str(PREFECT), "worker", "start", "--type", "kubernetes",
              "--pool", KUBERNETES_POOL, "--name", KUBERNETES_WORKER),
        state_dir=stack.state_dir / "k8s-worker",
        label="the Kubernetes worker",
        readiness=f"sending heartbeats for pool {KUBERNETES_POOL}",
        cwd=REPO_ROOT,
        env=env,
    )
    since = time.time()
    record = supervisor.start(service, timeout_s=SERVE_TIMEOUT_S,
                              ready=lambda: worker_heartbeat(stack, since=since))
    try:
        yield KubernetesWorker(log_file=service.log_file, pid=record.pid)
    finally:
        stopped = supervisor.stop(name=service.name, state_dir=service.state_dir)
        # Stopped by SIGTERM alone: it shuts down cleanly while the server and cluster run.
        assert str(stopped).endswith("(SIGTERM)"), f"the Kubernetes worker: {stopped}"
