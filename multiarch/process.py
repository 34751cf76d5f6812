"""The one process layer: every command the product runs goes through here.

`run_step` streams a plan step's output, enforces a deadline and never leaks the step;
`capture` runs a short command (git ls-remote, skopeo inspect, iptables, umount) and turns
a missing tool or a timeout into our error types; `kill_all_steps` kills every live step
tree. Both strip secrets from the child's environment, and both classify failures through
`multiarch.failures`.

Streaming a step:

Each step starts in its own process group so a timeout or a cancellation can signal the
step together with whatever it forked (buildah's children, qemu). Every live group is
recorded so that the flow's cancellation hook and interpreter exit can kill them too.

A process group is not enough: anything that calls setsid() leaves it, and a SIGKILLed
Python never gets to kill anything. So each step also runs in its own PID and mount
namespace (`unshare`): the step is PID 2 under a tiny init, and when that init ends (the
step exited) or is killed (its `unshare` parent died, which the kernel arranges when we
die, even by SIGKILL) the kernel kills every process left in the namespace and drops the
mounts made in it (buildah's and skopeo's overlay mounts). Storage stays on disk, so a
later step (export, push) still reads what the build wrote.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import ctypes
import functools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from multiarch.credentials import ENV_CREDENTIALS
from multiarch.errors import ConfigurationError, StepFailed, TransientError, TransientStepFailure
from multiarch.failures import classify_output, is_transient_message, step_paths

TAIL_LINES = 20
SECRET_ENV = frozenset({ENV_CREDENTIALS})
KILL_GRACE_S = 5.0

# A fresh PID namespace (with its own /proc) and a private mount namespace; unshare's
# child is killed when unshare dies (--kill-child).
NAMESPACE_ARGV = (
    "unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "private",
)  # fmt: skip
# PID 1 of the namespace. The step must not be PID 1 itself: the kernel drops signals that
# PID 1 has no handler for, so a plain `sleep` as PID 1 would shrug off SIGTERM. This init
# ignores signals (the step gets them from the group), reaps orphans, and reports the
# step's exact wait status through a pipe, since an exit code cannot say "killed by 9".
STEP_INIT = """
import os, sys
status_fd = int(sys.argv[1])
os.set_inheritable(status_fd, False)
child = os.fork()
if child == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
while True:
    pid, status = os.wait()
    if pid == child:
        break
code = os.waitstatus_to_exitcode(status)
os.write(status_fd, str(code).encode())
os._exit(code if code >= 0 else 128 - code)
"""
PR_SET_PDEATHSIG = 1
# Tool -> the Debian package that ships it, for "not installed" errors.
PACKAGES = {"buildah": "buildah", "skopeo": "skopeo", "git": "git", "runc": "runc",
            "unshare": "util-linux", "mount": "mount", "umount": "mount",
            "iptables": "iptables"}

_live_groups: set[int] = set()
_live_lock = threading.Lock()
# Which build started each step group: a fleet runs several builds in one process, and a
# failing build must stop its own steps, not its neighbours' (multiarch.fleet).
_group_scopes: dict[int, str | None] = {}
_step_scope: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "multiarch_step_scope", default=None)


@contextlib.contextmanager
def step_scope(name: str) -> Iterator[None]:
    """Steps started inside (in this context and contexts copied from it, such as Prefect
    task threads) belong to build `name`; `kill_scope_steps` stops only those."""
    token = _step_scope.set(name)
    try:
        yield
    finally:
        _step_scope.reset(token)


def current_step_scope() -> str | None:
    """The build scope of this context (None outside `step_scope`)."""
    return _step_scope.get()


def kill_scope_steps() -> int:
    """Kill the steps of the current build scope; outside any scope, every step."""
    scope = _step_scope.get()
    if scope is None:
        return kill_all_steps()
    with _live_lock:
        groups = [g for g in _live_groups if _group_scopes.get(g) == scope]
    return _kill_groups(groups)


@dataclass(frozen=True, kw_only=True)
class Step:
    """One command: a name for logs and errors, its argv, and extra environment.

    Plans are lists of these (multiarch.plan); every runner executes them as they are.
    """

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class StepOutcome:
    name: str
    exit_code: int
    duration_s: float


def kill_all_steps() -> int:
    """Kill every step process group still running (cancellation, crash, exit).

    All groups get SIGTERM at once and share one grace period, so stopping two platforms
    takes as long as stopping one (contract: everything gone within 10 s).
    """
    with _live_lock:
        groups = list(_live_groups)
    return _kill_groups(groups)


def _kill_groups(groups: list[int]) -> int:
    """SIGTERM every group at once, then give them one shared grace period."""
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGTERM)
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
    # Git credentials reach git through a store file (multiarch.credentials); no step
    # (buildah, and through it a RUN step) inherits them from our environment.
    env = child_env(dict(step.env))
    if shutil.which(step.argv[0], path=env.get("PATH")) is None:
        raise ConfigurationError(
            f"{label}: {step.argv[0]} is not installed (needed by step {step.name})"
        )
    status_read, status_write = os.pipe()
    try:
        process = _spawn(step, env=env, status_fd=status_write, label=label)
    finally:
        os.close(status_write)
    with _live_lock:
        _live_groups.add(process.pid)
        _group_scopes[process.pid] = _step_scope.get()
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
        exit_code = _step_status(process.wait(), status_read)
    except BaseException:
        _kill_group(process.pid, leader=process)
        raise
    finally:
        watchdog.cancel()
        os.close(status_read)
        with _live_lock:
            _live_groups.discard(process.pid)
            _group_scopes.pop(process.pid, None)
    if timed_out.is_set():
        raise StepFailed(
            f"{label}: step {step.name} timed out (the build's time limit ran out): raise "
            "timeout_s or make the build faster",
            step=step.name,
            exit_code=exit_code,
            tail=list(tail),
        )
    if exit_code != 0:
        raise classify_failure(step.name, exit_code, list(tail), label=label,
                               paths=step_paths(step.argv))
    return StepOutcome(name=step.name, exit_code=0, duration_s=time.monotonic() - started)


def classify_failure(
    step: str, exit_code: int, tail: list[str], *, label: str, paths: Sequence[str] = ()
) -> StepFailed | TransientStepFailure:
    """Retry or not, from the tool's own error line (multiarch.failures), never a RUN step's.

    `paths` are the step's directories: a full disk is reported with its free space.
    """
    if exit_code < 0 and -exit_code == signal.SIGKILL:
        last = next((line for line in reversed(tail) if line.strip()), "no output")
        message = f"{label}: step {step} exited with {exit_code}: {last.strip()}"
        return TransientStepFailure(
            message + " (killed: out of memory?)", step=step, exit_code=exit_code, tail=tail
        )
    verdict = classify_output(tail, paths=paths)
    message = f"{label}: step {step} exited with {exit_code}: {verdict.line}"
    if verdict.reason.startswith("no space left"):
        message += f" ({verdict.reason}: {verdict.hint})"
    if verdict.transient:
        return TransientStepFailure(message, step=step, exit_code=exit_code, tail=tail)
    return StepFailed(message, step=step, exit_code=exit_code, tail=tail)


def namespaced_argv(argv: tuple[str, ...], *, status_fd: int) -> list[str]:
    """The step's argv wrapped: unshare, then our init (PID 1), then the step (PID 2)."""
    init = [sys.executable, "-I", "-S", "-c", STEP_INIT, str(status_fd)]
    return [*NAMESPACE_ARGV, "--", *init, *argv]


def _spawn(step: Step, *, env: dict[str, str], status_fd: int, label: str
           ) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            namespaced_argv(step.argv, status_fd=status_fd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            pass_fds=(status_fd,),
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),
        )
    except FileNotFoundError as exc:
        raise ConfigurationError(
            f"{label}: unshare is not installed (needed to isolate step {step.name}): "
            "install the Debian package util-linux"
        ) from exc


def _die_with_parent(parent: int) -> None:
    """In the forked child before exec: SIGKILL us when the spawning thread dies.

    That thread waits for the step, so this fires only when our process dies (even by
    SIGKILL); `unshare --kill-child` then takes the namespace's init, and the kernel the
    rest. If the parent already died before prctl, die now instead of running orphaned.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


def _step_status(unshare_code: int, status_read: int) -> int:
    """The step's own exit code (negative: killed by that signal), as the init saw it.

    Without a report (the init was killed: timeout, cancellation) unshare's code stands.
    """
    report = os.read(status_read, 32).strip()
    return int(report) if report else unshare_code


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


@dataclass(frozen=True, kw_only=True)
class Captured:
    """A short command's outcome, decoded."""

    exit_code: int
    output: bytes  # stdout, exact (a manifest's digest is taken over these bytes)
    stderr: str

    @property
    def stdout(self) -> str:
        return self.output.decode("utf-8", errors="replace")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def last_error(self) -> str:
        """The command's last stderr line (its own error), else its last stdout line."""
        lines = (self.stderr or self.stdout).strip().splitlines()
        return lines[-1] if lines else f"exit code {self.exit_code}"


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment without the secrets no child may inherit, plus `extra`."""
    return {k: v for k, v in os.environ.items() if k not in SECRET_ENV} | dict(extra or {})


def capture(argv: Sequence[str], *, what: str, timeout_s: float,
            env: dict[str, str] | None = None, stdin: bytes | None = None) -> Captured:
    """Run a short command to completion and return its output; never raises for a non-zero
    exit (the caller knows what that means), but a missing tool is a ConfigurationError
    naming its package, and a timeout a TransientError."""
    try:
        done = subprocess.run(list(argv), capture_output=True, timeout=timeout_s, check=False,
                              input=stdin, env=child_env(env))
    except FileNotFoundError as exc:
        tool = Path(argv[0]).name
        raise ConfigurationError(
            f"{what}: {tool} is not installed: install the Debian package "
            f"{PACKAGES.get(tool, tool)}") from exc
    except subprocess.TimeoutExpired as exc:
        raise TransientError(f"{what} timed out after {timeout_s:.0f}s") from exc
    return Captured(exit_code=done.returncode, output=done.stdout,
                    stderr=done.stderr.decode("utf-8", errors="replace"))


def is_transient(captured: Captured) -> bool:
    """Did the command fail for a passing reason (network, registry), by its own error?"""
    return not captured.ok and is_transient_message(captured.stderr or captured.stdout)
