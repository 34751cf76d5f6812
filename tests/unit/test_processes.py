"""Unit tests for running one step: failure classification, streaming, deadlines, cleanup.

The run_step tests start tiny real commands (`/bin/sh`, `sleep`); each takes well under a
second except the timeout test, which is bounded by its 0.5 s deadline plus the kill.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from multiarch.errors import ConfigurationError, StepFailed, TransientStepFailure
from multiarch.plan import Step
from multiarch.runners import processes
from multiarch.runners.processes import classify_failure, run_step

LABEL = "linux/arm64"


def sh(script: str, name: str = "build", **env: str) -> Step:
    return Step(name=name, argv=("/bin/sh", "-c", script), env=env)


def soon(seconds: float = 20.0) -> float:
    return time.monotonic() + seconds


def group_is_gone(pid: int, wait_s: float = 8.0) -> bool:
    """True once no process of group `pid` is left (orphans may need a moment to be reaped)."""
    end = time.monotonic() + wait_s
    while True:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.05)


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


def test_deadline_kills_the_whole_group() -> None:
    lines: list[str] = []
    started = time.monotonic()
    with pytest.raises(StepFailed) as info:
        # The shell stays as the group leader and its `sleep` child shares its group.
        run_step(
            sh("echo $$; sleep 30; echo never"),
            emit=lines.append,
            deadline=time.monotonic() + 0.5,
            label=LABEL,
        )
    elapsed = time.monotonic() - started
    assert elapsed < 10
    assert "timed out" in str(info.value)
    assert info.value.step == "build"
    assert "never" not in lines
    pid = int(lines[0])
    assert group_is_gone(pid)


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


def test_cancellation_kills_the_whole_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "KILL_GRACE_S", 1.0)
    lines: list[str] = []
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_step(
            sh("echo $$; sleep 30 & echo $!; wait"),
            emit=_cancel_on_second_line(lines),
            deadline=soon(),
            label=LABEL,
        )
    assert time.monotonic() - started < 10
    child = int(lines[1])
    end = time.monotonic() + 8
    while True:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < end, "the step's child survived the cancellation"
        time.sleep(0.05)
    assert processes.kill_all_steps() == 0


def test_cancellation_returns_promptly_and_reaps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "KILL_GRACE_S", 3.0)
    lines: list[str] = []

    def emit(line: str) -> None:
        lines.append(line)
        raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt) as info:
        # One process only (exec): once it is reaped, its group is empty.
        run_step(sh("echo $$; exec sleep 30"), emit=emit, deadline=soon(), label=LABEL)
    elapsed = time.monotonic() - started
    assert info.value is not None  # keep the traceback (and the Popen) alive, as a caller would
    assert elapsed < 2.0, f"cancellation took {elapsed:.1f} s (SIGTERM kills this step at once)"
    assert not Path(f"/proc/{lines[0]}").exists(), "the step's process was left a zombie"


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
