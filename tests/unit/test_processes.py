"""Unit tests for running one step: failure classification, streaming, deadlines, cleanup.

The run_step tests start tiny real commands (`/bin/sh`, `sleep`); each takes well under a
second except the timeout test, which is bounded by its 0.5 s deadline plus the kill.
A step runs in its own PID namespace, so the PIDs it prints mean nothing on the host:
the tests find a step's processes by a unique `sleep` duration in their command lines.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from multiarch import process as processes
from multiarch.errors import ConfigurationError, StepFailed, TransientStepFailure
from multiarch.process import Step, classify_failure, run_step
from tests.faults.hoststate import processes_with

LABEL = "linux/arm64"


def sh(script: str, name: str = "build", **env: str) -> Step:
    return Step(name=name, argv=("/bin/sh", "-c", script), env=env)


def soon(seconds: float = 20.0) -> float:
    return time.monotonic() + seconds


def token() -> str:
    """A `sleep` duration no other process on this machine uses: finds a step's processes."""
    return f"300.{uuid.uuid4().int % 10**9:09d}"


def left_running(text: str, wait_s: float = 8.0) -> list[str]:
    """What still runs with `text` once the kernel had a moment to finish killing."""
    end = time.monotonic() + wait_s
    while (found := processes_with(text)) and time.monotonic() < end:
        time.sleep(0.05)
    return found


def zombie_children() -> list[int]:
    """Our exited but unreaped children: a step whose Popen was never waited for."""
    zombies = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            zombies.append(int(stat.parent.name))
    return zombies


def host_mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


# --- classify_failure ------------------------------------------------------------------


def test_connection_reset_is_transient() -> None:
    tail = [
        "STEP 1/3: FROM docker.io/library/alpine:3.20",
        "Trying to pull docker.io/library/alpine:3.20...",
        "Error: read tcp 10.0.0.2:4242->1.2.3.4:443: read: connection reset by peer",
        "",
    ]
    failure = classify_failure("build", 125, tail, label=LABEL)
    assert isinstance(failure, TransientStepFailure)
    assert str(failure) == (
        "linux/arm64: step build exited with 125: "
        "Error: read tcp 10.0.0.2:4242->1.2.3.4:443: read: connection reset by peer"
    )
    assert (failure.step, failure.exit_code, failure.tail) == ("build", 125, tail)


@pytest.mark.parametrize(
    "line",
    [
        "Error: 503 Service Unavailable",
        "toomanyrequests: You have reached your pull rate limit",
        "dial tcp: lookup registry: Temporary failure in name resolution",
        "net/http: TLS handshake timeout",
    ],
)
def test_registry_and_network_failures_are_transient(line: str) -> None:
    failure = classify_failure("export", 1, ["copying blob", line], label=LABEL)
    assert isinstance(failure, TransientStepFailure)


def test_plain_failure_is_permanent() -> None:
    tail = ["STEP 3/5: RUN make", "make: *** [Makefile:3: all] Error 2", "   ", ""]
    failure = classify_failure("build", 2, tail, label=LABEL)
    assert isinstance(failure, StepFailed)
    assert not isinstance(failure, TransientStepFailure)
    message = str(failure)
    assert "step build" in message
    assert "exited with 2" in message
    assert message.endswith("make: *** [Makefile:3: all] Error 2")
    assert message.startswith("linux/arm64: ")
    assert (failure.step, failure.exit_code, failure.tail) == ("build", 2, tail)


def test_empty_tail_says_no_output() -> None:
    failure = classify_failure("checkout", 128, [], label=LABEL)
    assert isinstance(failure, StepFailed)
    assert str(failure) == "linux/arm64: step checkout exited with 128: no output"


def test_sigkill_is_transient_and_suggests_oom() -> None:
    failure = classify_failure("build", -signal.SIGKILL, ["compiling"], label=LABEL)
    assert isinstance(failure, TransientStepFailure)
    assert "out of memory" in str(failure)


def test_other_signal_is_permanent() -> None:
    assert isinstance(classify_failure("build", -signal.SIGSEGV, ["x"], label=LABEL), StepFailed)


# --- run_step --------------------------------------------------------------------------


def test_lines_are_emitted_in_order() -> None:
    lines: list[str] = []
    outcome = run_step(
        sh("echo a; echo b; echo c >&2; printf d"), emit=lines.append, deadline=soon(), label=LABEL
    )
    assert lines == ["a", "b", "c", "d"]
    assert outcome.name == "build"
    assert outcome.exit_code == 0
    assert 0 <= outcome.duration_s < 10


def test_step_env_is_added_to_the_environment() -> None:
    lines: list[str] = []
    run_step(
        sh('echo "$STEP_VALUE|${PATH:+has-path}"', STEP_VALUE="$(id) ;x"),
        emit=lines.append,
        deadline=soon(),
        label=LABEL,
    )
    assert lines == ["$(id) ;x|has-path"]


def test_argv_is_not_parsed_by_a_shell() -> None:
    lines: list[str] = []
    hostile = "$(id); `uname` 'q' \"d\""
    step = Step(name="echo", argv=(sys.executable, "-c", "import sys; print(sys.argv[1])", hostile))
    run_step(step, emit=lines.append, deadline=soon(), label=LABEL)
    assert lines == [hostile]


def test_undecodable_output_is_replaced_not_fatal() -> None:
    lines: list[str] = []
    run_step(sh(r"printf 'caf\351\n'"), emit=lines.append, deadline=soon(), label=LABEL)
    assert lines == ["caf\ufffd"]


def test_non_zero_exit_raises_step_failed() -> None:
    with pytest.raises(StepFailed) as info:
        run_step(
            sh("echo working; echo 'RUN failed: bad thing'; exit 3"),
            emit=lambda _: None,
            deadline=soon(),
            label=LABEL,
        )
    failure = info.value
    assert failure.exit_code == 3
    assert failure.step == "build"
    assert failure.tail == ["working", "RUN failed: bad thing"]
    assert str(failure) == "linux/arm64: step build exited with 3: RUN failed: bad thing"


def test_transient_output_raises_transient_failure() -> None:
    with pytest.raises(TransientStepFailure) as info:
        run_step(
            sh("echo 'Error: 502 Bad Gateway'; exit 1", name="export"),
            emit=lambda _: None,
            deadline=soon(),
            label=LABEL,
        )
    assert info.value.step == "export"
    assert info.value.exit_code == 1


def test_killed_step_is_transient() -> None:
    with pytest.raises(TransientStepFailure) as info:
        run_step(sh("kill -9 $$"), emit=lambda _: None, deadline=soon(), label=LABEL)
    assert info.value.exit_code == -signal.SIGKILL


def test_tail_keeps_only_the_last_lines() -> None:
    with pytest.raises(StepFailed) as info:
        run_step(
            sh("i=0; while [ $i -lt 50 ]; do echo line$i; i=$((i+1)); done; exit 1"),
            emit=lambda _: None,
            deadline=soon(),
            label=LABEL,
        )
    assert info.value.tail == [f"line{i}" for i in range(30, 50)]


def test_deadline_kills_the_step_and_its_daemons() -> None:
    lines: list[str] = []
    marker = token()
    started = time.monotonic()
    with pytest.raises(StepFailed) as info:
        # setsid leaves the step's process group: only the PID namespace still holds it.
        run_step(
            sh(f"setsid sleep {marker} & echo started; sleep {marker}; echo never"),
            emit=lines.append,
            deadline=time.monotonic() + 0.5,
            label=LABEL,
        )
    elapsed = time.monotonic() - started
    assert elapsed < 10
    assert "timed out" in str(info.value)
    assert info.value.step == "build"
    assert lines == ["started"]
    assert left_running(marker) == []


def test_deadline_already_passed_starts_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(StepFailed) as info:
        run_step(
            sh(f"touch {marker}"), emit=lambda _: None, deadline=time.monotonic() - 1, label=LABEL
        )
    assert "no time left" in str(info.value)
    assert not marker.exists()


def test_missing_binary_is_a_configuration_error() -> None:
    step = Step(name="export", argv=("skopeo-does-not-exist-here", "copy"))
    with pytest.raises(ConfigurationError) as info:
        run_step(step, emit=lambda _: None, deadline=soon(), label=LABEL)
    message = str(info.value)
    assert "skopeo-does-not-exist-here is not installed" in message
    assert "step export" in message


def _cancel_on_second_line(lines: list[str]) -> Callable[[str], None]:
    def emit(line: str) -> None:
        lines.append(line)
        if len(lines) == 2:
            raise KeyboardInterrupt  # what a cancellation looks like inside the read loop

    return emit


def test_cancellation_kills_the_step_and_its_daemons(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "KILL_GRACE_S", 1.0)
    lines: list[str] = []
    marker = token()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_step(
            sh(f"sleep {marker} & setsid sleep {marker} & echo one; echo two; wait"),
            emit=_cancel_on_second_line(lines),
            deadline=soon(),
            label=LABEL,
        )
    assert time.monotonic() - started < 10
    assert left_running(marker) == [], "a process of the step survived the cancellation"
    assert processes.kill_all_steps() == 0


def test_cancellation_returns_promptly_and_reaps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "KILL_GRACE_S", 3.0)
    lines: list[str] = []

    def emit(line: str) -> None:
        lines.append(line)
        raise KeyboardInterrupt

    marker = token()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt) as info:
        # The step is not PID 1 of its namespace, so a plain `sleep` dies of SIGTERM at once.
        run_step(sh(f"echo started; exec sleep {marker}"), emit=emit, deadline=soon(),
                 label=LABEL)
    elapsed = time.monotonic() - started
    assert info.value is not None  # keep the traceback (and the Popen) alive, as a caller would
    assert elapsed < 2.0, f"cancellation took {elapsed:.1f} s (SIGTERM kills this step at once)"
    assert processes_with(marker) == []
    assert zombie_children() == [], "the step's process was left a zombie"


def test_step_sees_only_its_own_processes() -> None:
    lines: list[str] = []
    script = f"echo $$; test -e /proc/{os.getpid()} && echo host-visible || echo host-hidden"
    run_step(sh(script), emit=lines.append, deadline=soon(), label=LABEL)
    assert lines == ["2", "host-hidden"]  # PID 1 is the namespace's init


def test_mounts_made_by_a_step_stay_in_the_step(tmp_path: Path) -> None:
    lines: list[str] = []
    script = f"mount -t tmpfs step {tmp_path} && touch {tmp_path}/inside && echo mounted"
    run_step(sh(script), emit=lines.append, deadline=soon(), label=LABEL)
    assert lines == ["mounted"]
    assert f" {tmp_path} " not in host_mounts()
    assert list(tmp_path.iterdir()) == []


def test_exit_code_from_the_step_is_exact_not_a_signal() -> None:
    with pytest.raises(StepFailed) as info:
        run_step(sh("exit 137"), emit=lambda _: None, deadline=soon(), label=LABEL)
    assert info.value.exit_code == 137


def test_sigkill_of_our_process_kills_the_step_and_its_daemons(tmp_path: Path) -> None:
    """A SIGKILLed runner runs no cleanup code: the kernel must end the step by itself."""
    marker = token()
    script = (
        "from multiarch.process import Step\n"
        "from multiarch.process import run_step\n"
        "import sys, time\n"
        f"step = Step(name='build', argv=('sh', '-c', 'setsid sleep {marker} & "
        f"echo started; sleep {marker}'))\n"
        "run_step(step, emit=lambda line: print(line, flush=True),"
        " deadline=time.monotonic() + 600, label='x')\n"
    )
    runner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[2])
    assert runner.stdout is not None
    assert runner.stdout.readline().strip() == "started"
    assert len(processes_with(marker)) >= 2
    runner.kill()
    runner.wait()
    assert left_running(marker) == []


def test_step_failures_survive_pickling_with_their_details():
    import pickle

    from multiarch.errors import StepFailed, TransientStepFailure

    for cls in (StepFailed, TransientStepFailure):
        original = cls("[linux/arm64]: step build exited with 7", step="build", exit_code=7,
                       tail=["a", "b"])
        copy = pickle.loads(pickle.dumps(original))
        assert type(copy) is cls
        assert (str(copy), copy.step, copy.exit_code, copy.tail) == (
            str(original), "build", 7, ["a", "b"])


# --- build scopes (a fleet runs several builds in one process) -----------------------

def test_a_failed_build_stops_its_own_steps_not_a_neighbours() -> None:
    import threading

    mine, neighbours = token(), token()
    errors: dict[str, BaseException] = {}

    def build(scope: str, duration: str) -> None:
        with processes.step_scope(scope):
            try:
                run_step(sh(f"sleep {duration}"), emit=lambda _: None, deadline=soon(60),
                         label=LABEL)
            except BaseException as exc:  # the killed step's error, looked at below
                errors[scope] = exc

    threads = [threading.Thread(target=build, args=(scope, duration))
               for scope, duration in (("mine", mine), ("neighbour", neighbours))]
    for thread in threads:
        thread.start()
    end = time.monotonic() + 10
    while not (processes_with(mine) and processes_with(neighbours)):
        assert time.monotonic() < end, "the steps never started"
        time.sleep(0.05)
    try:
        with processes.step_scope("mine"):
            assert processes.kill_scope_steps() == 1
        assert not left_running(mine)
        assert processes_with(neighbours), "the neighbour's step was killed too"
    finally:
        processes.kill_all_steps()
        for thread in threads:
            thread.join(30)
    assert "mine" in errors
