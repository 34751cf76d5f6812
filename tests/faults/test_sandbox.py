"""A RUN step cannot reach the worker: the chroot-escape probe, daemons, timeouts, SIGKILL.

tests/faults/escape.c is a classic chroot escape, compiled static and copied into a build
context. Its RUN step tries to read files of the worker that lie outside the build (a file
in the work directory, one in a directory standing for `.local/`, a file of this
repository), looks for this test's own PID in /proc, and asks the worker's loopback
registry for /v2/. Through the local runner nothing of that may show in the build output.
The same probe under `--isolation chroot` (how RUN steps ran before) does read the files,
so the assertions cannot pass vacuously.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from multiarch.platforms import Platform
from multiarch.request import BuildRequest, RunnerOptions
from multiarch.runclaim import mounts_under, sweep
from multiarch.runners.local.runner import build_platform
from multiarch.source import PinnedSource
from multiarch.workspace import RunDirs
from tests.faults.hoststate import (
    age_networks,
    host_runtime_state,
    networks_since,
    processes_with,
    runtime_files_since,
    still_held,
)

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
ESCAPE_C = Path(__file__).with_name("escape.c")
REPO_FILE = REPO_ROOT / "pyproject.toml"

PROBE = """\
ARG BASE
FROM ${BASE}
ARG WORK_SECRET
ARG LOCAL_SECRET
ARG REPO_FILE
ARG HOST_PID
ARG REGISTRY_PORT
COPY escape /escape
RUN echo "arch: $(uname -m)"; \\
    /escape "$WORK_SECRET" "$HOST_PID"; /escape "$LOCAL_SECRET" "$HOST_PID"; \\
    /escape "$REPO_FILE" "$HOST_PID"; \\
    (printf 'GET /v2/ HTTP/1.0\\r\\n\\r\\n'; sleep 2) | nc -w 3 127.0.0.1 "$REGISTRY_PORT" \\
        | head -n 1 | sed 's/^/loopback: /'; true
"""

DAEMON = """\
ARG BASE
FROM ${BASE}
ARG TOKEN
RUN setsid sleep "$TOKEN" </dev/null >/dev/null 2>&1 & echo "daemon started"; {rest}
"""


STARTED = "[linux/amd64] daemon started"


class Lines:
    """A LineLogger that keeps what the build printed."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str, /) -> None:
        self.lines.append(msg)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def token() -> str:
    """A `sleep` duration nothing else on this machine uses: finds the build's daemon."""
    return f"300.{uuid.uuid4().int % 10**9:09d}"



def left_running(text: str, wait_s: float = 10.0) -> list[str]:
    end = time.monotonic() + wait_s
    while (found := processes_with(text)) and time.monotonic() < end:
        time.sleep(0.1)
    return found


@pytest.fixture(scope="module")
def escape_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("escape") / "escape"
    subprocess.run(["gcc", "-static", "-O2", "-Wall", "-o", str(out), str(ESCAPE_C)],
                   check=True, capture_output=True, timeout=120)
    return out


class Probe:
    """The escape's build context and the worker files it hunts for (all outside it)."""

    def __init__(self, tmp_path: Path, escape_binary: Path, playground) -> None:
        self.work = tmp_path / "work"
        self.context = tmp_path / "context"
        self.context.mkdir()
        shutil.copy(escape_binary, self.context / "escape")
        (self.context / "Containerfile").write_text(PROBE)
        self.work_secret = self._secret(self.work / "registry-auth.json")
        self.local_secret = self._secret(tmp_path / "dot-local" / "registry" / "config.yml")
        self.build_args = {
            "BASE": playground.base,
            "WORK_SECRET": str(self.work_secret),
            "LOCAL_SECRET": str(self.local_secret),
            "REPO_FILE": str(REPO_FILE),
            "HOST_PID": str(os.getpid()),
            "REGISTRY_PORT": playground.address.rsplit(":", 1)[1],
        }

    @staticmethod
    def _secret(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"secret-{uuid.uuid4().hex}\n")
        return path

    def secrets(self) -> list[str]:
        return [p.read_text().strip() for p in (self.work_secret, self.local_secret)]


def build_locally(context: Path, work: Path, *, platform: str, build_args: dict[str, str],
                  timeout_s: int = 600, log: Lines | None = None
                  ) -> tuple[Lines, Exception | None]:
    """One platform through the local runner, as the flow runs it."""
    request = BuildRequest(
        image="127.0.0.1:5000/tests/sandbox:latest",
        platforms=(platform,),
        context=str(context),
        build_args=build_args,
        allow_emulation=True,
        insecure_registry=True,
        runner=RunnerOptions(work_dir=str(work), timeout_s=timeout_s),
    )
    dirs = RunDirs(work=work, shared=work / "shared", run_id=uuid.uuid4().hex[:12])
    log = log or Lines()
    try:
        build_platform(request, PinnedSource(kind="local", location=str(context)),
                       Platform.parse(platform), dirs=dirs, log=log)
    except Exception as exc:
        return log, exc
    return log, None


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64"])
def test_run_step_cannot_read_worker_files_nor_see_its_processes(
    playground, tmp_path, escape_binary, platform, record_scenario
):
    probe = Probe(tmp_path, escape_binary, playground)
    log, failure = build_locally(probe.context, probe.work, platform=platform,
                                 build_args=probe.build_args)
    assert failure is None, log.text[-3000:]
    expected_arch = "x86_64" if platform == "linux/amd64" else "aarch64"
    assert f"arch: {expected_arch}" in log.text  # the emulated RUN step still runs
    assert log.text.count("escape: cannot read") == 3, log.text[-3000:]
    assert "escape: read:" not in log.text
    for secret in probe.secrets():
        assert secret not in log.text
    assert f"escape: host pid {os.getpid()} not visible" in log.text
    assert "VISIBLE" not in log.text
    assert "loopback: HTTP" not in log.text, "the RUN step reached the worker's registry"
    record_scenario(
        f"chroot escape from a RUN step ({platform}, local runner)",
        "the escape stays in the RUN container: no worker file read, host PIDs invisible, "
        "the worker's 127.0.0.1 registry unreachable; the build succeeds",
        "nothing",
    )


def test_the_escape_probe_does_escape_a_chroot_isolated_run_step(
    playground, tmp_path, escape_binary, record_scenario
):
    """The control: the pre-sandbox way (`--isolation chroot`) leaks everything."""
    probe = Probe(tmp_path, escape_binary, playground)
    storage = tmp_path / "storage"
    argv = ["buildah", "--root", str(storage / "root"), "--runroot", str(storage / "runroot"),
            "build", "--isolation", "chroot", "--platform", "linux/amd64",
            "--tls-verify=false", "--tag", "localhost/escape:chroot"]
    for name, value in probe.build_args.items():
        argv += ["--build-arg", f"{name}={value}"]
    try:
        done = subprocess.run([*argv, str(probe.context)], capture_output=True, text=True,
                              timeout=600, env={**os.environ, "BUILDAH_ISOLATION": "chroot"})
    finally:
        subprocess.run(["buildah", "--root", str(storage / "root"), "--runroot",
                        str(storage / "runroot"), "rmi", "--all", "--force"],
                       capture_output=True, check=False, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    for secret in probe.secrets():
        assert f"escape: read: {secret}" in output
    assert f"escape: host pid {os.getpid()} VISIBLE" in output
    assert "loopback: HTTP/1.0 200 OK" in output
    record_scenario(
        "chroot escape under `--isolation chroot` (the control)",
        "the probe reads the worker's files, sees host PIDs and reaches its loopback "
        "registry: the sandbox test is not vacuous",
        "nothing (test storage removed)",
    )


def daemon_context(tmp_path: Path, rest: str) -> Path:
    context = tmp_path / "context"
    context.mkdir()
    (context / "Containerfile").write_text(DAEMON.replace("{rest}", rest))
    return context


def test_a_daemon_started_by_a_run_step_is_gone_after_the_build(
    playground, tmp_path, record_scenario
):
    marker = token()
    context = daemon_context(tmp_path, "true")
    log, failure = build_locally(context, tmp_path / "work", platform="linux/amd64",
                                 build_args={"BASE": playground.base, "TOKEN": marker})
    assert failure is None, log.text[-3000:]
    assert STARTED in log.lines  # the RUN step ran (not just its STEP line)
    assert left_running(marker) == []
    record_scenario("`RUN setsid sleep &` in a successful build",
                    "the daemon dies with its RUN step", "nothing")


def test_a_daemon_started_by_a_run_step_is_gone_after_a_build_timeout(
    playground, tmp_path, record_scenario
):
    marker = token()
    context = daemon_context(tmp_path, f"sleep {marker}")
    log, failure = build_locally(context, tmp_path / "work", platform="linux/amd64",
                                 build_args={"BASE": playground.base, "TOKEN": marker},
                                 timeout_s=20)
    assert failure is not None and "timed out" in str(failure), log.text[-3000:]
    assert STARTED in log.lines  # the RUN step ran (not just its STEP line)
    assert left_running(marker) == []
    assert mounts_under(tmp_path) == []
    record_scenario("`RUN setsid sleep &` then a build timeout",
                    "the build fails naming the timeout; the step, its RUN step and the "
                    "daemon are gone", "nothing (no process, no mount)")


RUNNER = """\
import sys
from pathlib import Path
from tests.faults.test_sandbox import Lines, build_locally

class Echo(Lines):
    def info(self, msg):
        print(msg, flush=True)

build_locally(Path(sys.argv[1]), Path(sys.argv[2]), platform="linux/amd64",
              build_args={"BASE": sys.argv[3], "TOKEN": sys.argv[4]}, log=Echo())
"""


def test_sigkill_of_the_runner_mid_build_leaves_no_process_and_no_mount(
    playground, tmp_path, record_scenario
):
    marker = token()
    context = daemon_context(tmp_path, f"sleep {marker}")
    work = tmp_path / "work"
    host_state_before = host_runtime_state()
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(context), str(work), playground.base, marker],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT,
    )
    assert runner.stdout is not None
    seen = []
    try:
        for line in runner.stdout:
            seen.append(line)
            if line.rstrip("\n") == STARTED:
                break
        assert processes_with(marker), "".join(seen[-40:])
        assert mounts_under(work) == []  # the build's overlay mounts live in its own namespace
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
    assert left_running(marker) == []
    assert processes_with(str(context)) == [], "a step of the killed runner is still running"
    assert mounts_under(tmp_path) == []
    assert runtime_files_since(host_state_before) == []  # runc state stays in the scratch
    networks = networks_since(host_state_before)
    containers = age_networks(networks)
    swept = [str(item) for item in sweep(work)]
    assert still_held(networks, containers) == [], swept
    assert not (work / "builds").exists() or not any((work / "builds").iterdir())
    record_scenario("SIGKILL of the runner during a RUN step (local runner)",
                    "the kernel ends the step's PID namespace: buildah, the RUN step and "
                    "its daemon die; its mounts vanish with the namespace; the next sweep "
                    "removes the scratch and releases the RUN container's CNI address and "
                    "iptables rules (buildah had no chance to)",
                    "nothing after the sweep")
