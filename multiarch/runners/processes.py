"""Run one plan step as a subprocess: stream its output, enforce a deadline, never leak it.

Each step starts in its own process group so a timeout or a cancellation can kill the
step together with whatever it forked (buildah's chroot children, qemu). Every live group
is recorded so that the flow's cancellation hook and interpreter exit can kill them too.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from multiarch.errors import ConfigurationError, StepFailed, TransientStepFailure
from multiarch.plan import Step

TAIL_LINES = 20
KILL_GRACE_S = 5.0
# Output that marks a failure as passing: the registry or network, not the Containerfile.
TRANSIENT_MARKERS = (
    "connection reset by peer",
    "connection refused",
    "i/o timeout",
    "tls handshake timeout",
    "502 bad gateway",
    "503 service unavailable",
    "504 gateway timeout",
    "toomanyrequests",
    "too many requests",
    "temporary failure in name resolution",
    "unexpected eof",
    "no space left on device",
)

_live_groups: set[int] = set()
_live_lock = threading.Lock()


@dataclass(frozen=True, kw_only=True)
class StepOutcome:
    name: str
    exit_code: int
    duration_s: float


def kill_all_steps() -> int:
    """Kill every step process group still running (cancellation, crash, exit)."""
    with _live_lock:
        groups = list(_live_groups)
    for group in groups:
        _kill_group(group)
    return len(groups)


atexit.register(kill_all_steps)


def run_step(
    step: Step, *, emit: Callable[[str], None], deadline: float, label: str
) -> StepOutcome:
    """Run a step, passing each output line to `emit` as it arrives.

    Raises StepFailed (deterministic), TransientStepFailure (looks passing) or, when the
    deadline passes, StepFailed naming the timeout.
    """
    started = time.monotonic()
    remaining = deadline - started
    if remaining <= 0:
        raise StepFailed(
            f"{label}: no time left before step {step.name}",
            step=step.name,
            exit_code=None,
            tail=[],
        )
    try:
        process = subprocess.Popen(
            list(step.argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **step.env},
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise ConfigurationError(
            f"{label}: {step.argv[0]} is not installed (needed by step {step.name})"
        ) from exc
    with _live_lock:
        _live_groups.add(process.pid)
    timed_out = threading.Event()
    watchdog = threading.Timer(remaining, _expire, args=(process.pid, timed_out))
    watchdog.daemon = True
    watchdog.start()
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    try:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            tail.append(line)
            emit(line)
        exit_code = process.wait()
    except BaseException:
        _kill_group(process.pid, leader=process)
        raise
    finally:
        watchdog.cancel()
        with _live_lock:
            _live_groups.discard(process.pid)
    if timed_out.is_set():
        raise StepFailed(
            f"{label}: step {step.name} timed out (the build's time limit ran out): raise "
            "timeout_s or make the build faster",
            step=step.name,
            exit_code=exit_code,
            tail=list(tail),
        )
    if exit_code != 0:
        raise classify_failure(step.name, exit_code, list(tail), label=label)
    return StepOutcome(name=step.name, exit_code=0, duration_s=time.monotonic() - started)


def classify_failure(
    step: str, exit_code: int, tail: list[str], *, label: str
) -> StepFailed | TransientStepFailure:
    last = next((line for line in reversed(tail) if line.strip()), "no output")
    message = f"{label}: step {step} exited with {exit_code}: {last.strip()}"
    text = "\n".join(tail).lower()
    if exit_code < 0 and -exit_code == signal.SIGKILL:
        return TransientStepFailure(
            message + " (killed: out of memory?)", step=step, exit_code=exit_code, tail=tail
        )
    if any(marker in text for marker in TRANSIENT_MARKERS):
        return TransientStepFailure(message, step=step, exit_code=exit_code, tail=tail)
    return StepFailed(message, step=step, exit_code=exit_code, tail=tail)


def _expire(group: int, flag: threading.Event) -> None:
    flag.set()
    _kill_group(group)


def _kill_group(group: int, *, leader: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the group, then SIGKILL what is left after a grace period.

    When we hold the leader, reap it: an unreaped zombie still counts as a live group.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGTERM)
    if leader is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            leader.wait(timeout=KILL_GRACE_S)
    end = time.monotonic() + KILL_GRACE_S
    while time.monotonic() < end:
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)
