"""Cancellation that stops: signals and Prefect cancel during a build, SIGKILL and the sweep.

Each scenario runs `multiarch build` as a user would (a subprocess), with a RUN step that
prints a marker, daemonises a `sleep` and then sleeps itself; the test stops the run as
soon as the marker shows and then checks what a user would check: the CLI's exit, that no
process of the build is left on the host, that the tag did not move, and that nothing is
left under the work directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from multiarch.runclaim import mounts_under
from tests.faults.hoststate import (
    age_networks,
    host_runtime_state,
    networks_since,
    processes_with,
    runtime_files_since,
    still_held,
)
from tests.integration.conftest import tag_digest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
MARKER = "cancel-test-marker"
STOP_WITHIN_S = 10  # every process of the run gone (issue 8, contract 3)
EXIT_WITHIN_S = 30  # the CLI has exited


@dataclass
class Run:
    """A `multiarch build` subprocess whose merged output is collected as it arrives."""

    process: subprocess.Popen[str]
    token: str  # unique sleep duration: finds this run's processes on the host
    work: Path
    lines: list[str] = field(default_factory=list)

    def wait_for(self, text: str, timeout: float = 240) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(text in line for line in self.lines):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"never saw {text!r}; output:\n" + "\n".join(self.lines[-40:]))

    def exit_code(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def build_context(tmp_path: Path, base: str, token: str) -> Path:
    context = tmp_path / "context"
    context.mkdir()
    (context / "Containerfile").write_text(
        f"FROM {base}\n"
        f'RUN setsid sleep {token}1 & echo {MARKER}; sleep {token}2\n'
    )
    return context


def start_build(tmp_path: Path, playground, *, api_url: str | None, tag: str) -> Run:
    token = str(700000 + uuid.uuid4().int % 99999)
    context = build_context(tmp_path, playground.base, token)
    work = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "build",
         "--image", f"{playground.address}/tests/cancel:{tag}",
         "--platform", "linux/amd64", "--context", str(context),
         "--insecure-registry", "--work-dir", str(work)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO_ROOT,
    )
    run = Run(process=process, token=token, work=work)
    threading.Thread(target=_collect, args=(run,), daemon=True).start()
    return run


def _collect(run: Run) -> None:
    assert run.process.stdout is not None
    for line in run.process.stdout:
        run.lines.append(line.rstrip("\n"))



def wait_until_gone(token: str, timeout: float) -> list[str]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not processes_with(token):
            return []
        time.sleep(0.2)
    return processes_with(token)


def leftovers(work: Path) -> list[str]:
    """Run directories, records and mounts a finished run must not leave."""
    left = [str(p) for sub in ("builds", "shared", "runs") if (work / sub).is_dir()
            for p in (work / sub).iterdir()]
    return left + mounts_under(work)


def stop_if_alive(pid: int) -> None:
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def flow_run_state(api_url: str, *, tag: str) -> tuple[str, str]:
    """(flow run id, state type) of the one flow run building tests/cancel:TAG."""
    response = httpx.post(f"{api_url}/flow_runs/filter", json={"limit": 50}, timeout=10)
    response.raise_for_status()
    for run in response.json():
        if run["parameters"].get("image", "").endswith(f"/tests/cancel:{tag}"):
            return run["id"], run["state"]["type"]
    raise AssertionError(f"no flow run for tests/cancel:{tag}")


@pytest.fixture
def cancel_tag() -> Iterator[str]:
    yield f"t{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_signal_to_the_cli_during_a_build_stops_every_process_and_publishes_nothing(
    playground, tmp_path, signum, cancel_tag, record_scenario
):
    run = start_build(tmp_path, playground, api_url=None, tag=cancel_tag)
    run.wait_for(MARKER)
    run.process.send_signal(signum)
    signalled = time.monotonic()
    assert wait_until_gone(run.token, STOP_WITHIN_S) == [], run.output[-3000:]
    code = run.exit_code(timeout=EXIT_WITHIN_S)
    took = time.monotonic() - signalled
    assert code == 128 + signum, run.output[-3000:]
    assert f"cancelled ({signal.Signals(signum).name})" in run.output
    assert tag_digest(f"{playground.address}/tests/cancel:{cancel_tag}") is None
    assert leftovers(run.work) == []
    servers = [line for line in run.lines if "Starting temporary server on" in line]
    assert servers, "the CLI started no temporary server"
    port = servers[0].rsplit(":", 1)[1].strip()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
    record_scenario(
        f"{signal.Signals(signum).name} to `multiarch build` during a RUN step",
        f"exit {code} after {took:.1f} s; build processes (a daemonised one too) gone; "
        "flow run Cancelled; temporary Prefect server stopped; tag not moved",
        "nothing",
    )


def test_prefect_cancel_during_a_build_ends_the_run_cancelled(
    playground, prefect_server, tmp_path, cancel_tag, record_scenario
):
    run = start_build(tmp_path, playground, api_url=prefect_server, tag=cancel_tag)
    run.wait_for(MARKER)
    flow_run_id, state = flow_run_state(prefect_server, tag=cancel_tag)
    assert state == "RUNNING"
    httpx.post(f"{prefect_server}/flow_runs/{flow_run_id}/set_state",
               json={"state": {"type": "CANCELLING", "name": "Cancelling"}},
               timeout=10).raise_for_status()
    assert wait_until_gone(run.token, STOP_WITHIN_S) == [], run.output[-3000:]
    code = run.exit_code(timeout=EXIT_WITHIN_S)
    assert code != 0
    assert flow_run_state(prefect_server, tag=cancel_tag)[1] == "CANCELLED"
    assert tag_digest(f"{playground.address}/tests/cancel:{cancel_tag}") is None
    assert leftovers(run.work) == []
    record_scenario(
        "Prefect cancel (state set to Cancelling through the API) during a build",
        f"build processes gone, publish never started, flow run Cancelled, CLI exit {code}",
        "nothing",
    )


def test_sigkill_mid_build_leaves_nothing_the_next_gc_does_not_sweep(
    playground, tmp_path, cancel_tag, record_scenario, request
):
    host_state_before = host_runtime_state()
    run = start_build(tmp_path, playground, api_url=None, tag=cancel_tag)
    run.wait_for(MARKER)
    record = next((run.work / "runs").glob("*.json"))
    server_pid = json.loads(record.read_text())["server_pid"]
    assert server_pid and pid_alive(server_pid)
    request.addfinalizer(lambda: stop_if_alive(server_pid))  # should this test fail early
    run.process.kill()
    run.exit_code(timeout=EXIT_WITHIN_S)
    # The build's processes die with the CLI (each step's PID namespace dies with it).
    assert wait_until_gone(run.token, STOP_WITHIN_S) == []
    assert mounts_under(run.work) == []
    assert leftovers(run.work), "a killed run leaves its directories for the sweep"
    # runc's state and the RUN bundle stay inside the run's directories, not on the host.
    assert runtime_files_since(host_state_before) == []
    # The killed RUN container's network (CNI address, iptables rules) may be left
    # machine-wide; gc leaves young ones alone (their setup may be under way): age them.
    networks = networks_since(host_state_before)
    killed = age_networks(networks)
    done = subprocess.run(
        [sys.executable, "-m", "multiarch.cli", "gc", "--work-dir", str(run.work)],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "temporary Prefect server stopped" in done.stdout
    assert "directory removed" in done.stdout
    assert not pid_alive(server_pid)
    assert leftovers(run.work) == []
    if networks:  # buildah may or may not have released it before it died
        assert "network of a dead RUN container released" in done.stdout
    assert still_held(networks, killed) == []
    assert tag_digest(f"{playground.address}/tests/cancel:{cancel_tag}") is None
    record_scenario(
        "SIGKILL of `multiarch build` during a RUN step, then `multiarch gc`",
        "build processes die with the CLI (no mounts left); gc stops the orphaned temporary "
        "Prefect server, removes the run's directories and releases the killed RUN "
        "container's CNI address and iptables rules, printing each",
        "nothing after gc (the flow run on the stopped temporary server is gone with it)",
    )


def test_the_next_run_sweeps_what_a_killed_run_left_and_closes_its_flow_run(
    playground, prefect_server, tmp_path, cancel_tag, record_scenario
):
    killed = start_build(tmp_path, playground, api_url=prefect_server, tag=cancel_tag)
    killed.wait_for(MARKER)
    flow_run_id, _ = flow_run_state(prefect_server, tag=cancel_tag)
    killed.process.kill()
    killed.exit_code(timeout=EXIT_WITHIN_S)
    assert wait_until_gone(killed.token, STOP_WITHIN_S) == []
    assert flow_run_state(prefect_server, tag=cancel_tag)[1] == "RUNNING"  # stuck
    stale = leftovers(killed.work)
    assert stale
    context = tmp_path / "next"
    context.mkdir()
    (context / "Containerfile").write_text(f"FROM {playground.base}\nRUN true\n")
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "build",
         "--image", f"{playground.address}/tests/cancel:{cancel_tag}-next",
         "--platform", "linux/amd64", "--context", str(context),
         "--insecure-registry", "--work-dir", str(killed.work)],
        capture_output=True, text=True, timeout=600, cwd=REPO_ROOT, check=False,
        env={**os.environ, "PREFECT_API_URL": prefect_server},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "swept what a dead run left" in done.stderr + done.stdout
    state = httpx.get(f"{prefect_server}/flow_runs/{flow_run_id}", timeout=10).json()["state"]
    assert state["type"] == "CRASHED"
    assert leftovers(killed.work) == []
    record_scenario(
        "stale run directory and flow run left by a SIGKILLed run, then a new run",
        "the new run sweeps the dead run's build and handoff directories and marks its "
        "flow run Crashed (it was stuck Running), then builds and publishes",
        "nothing",
    )
