"""One supervisor for the development services: the registry, the Prefect server, the worker.

Each service runs detached in its own session (our Ctrl-C and exit do not reach it), logs
to `<state_dir>/<name>.log` and is recorded in `<state_dir>/<name>.pid`: line 1 the pid
(for humans and `kill`), line 2 JSON with the argv and the kernel start time, so a stale
record whose pid was reused by another process is recognised and never signalled. A start
is only done when the process answers (its TCP port, then any extra check); if it dies or
stays silent, what it started is stopped and the error quotes its log. Stopping signals
the whole process group, so helpers a service forked go with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools import procfs

POLL_S = 0.2
STOP_GRACE_S = 15.0
LOG_TAIL_LINES = 20

# Popen handles of services started by this process: polling them reaps a child that
# exited (otherwise it lingers as a zombie) and gives its exit code for the error.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class SupervisorError(Exception):
    """A service could not be started; the message says what and where to look."""


class AlreadyRunning(SupervisorError):
    """A live copy is recorded: a second one would fight it for the port and the files."""


class PortTaken(SupervisorError):
    """Something this state dir does not record listens on the service's port."""


class StartFailed(SupervisorError):
    """The service died or never became ready; `log_tail` holds what it said."""

    def __init__(self, message: str, *, log_tail: str, timed_out: bool) -> None:
        super().__init__(message)
        self.log_tail = log_tail
        self.timed_out = timed_out


@dataclass(frozen=True)
class Service:
    """A command to keep running in the background, and how to know it is ready."""

    name: str
    argv: tuple[str, ...]
    state_dir: Path
    label: str  # for messages: "the Prefect server"
    port: int | None = None
    host: str = "127.0.0.1"
    readiness: str | None = None  # for messages: what `ready` waits for
    cwd: Path | None = None
    env: Mapping[str, str] | None = None
    # Run as this user (its groups too) rather than as ourselves: PostgreSQL refuses root.
    user: str | None = None
    # Sent to the leader alone before the group is signalled: a server such as PostgreSQL
    # shuts its own children down cleanly on it, while SIGTERM to each child would not.
    stop_signal: signal.Signals | None = None

    @property
    def pid_file(self) -> Path:
        return pid_file(self.state_dir, self.name)

    @property
    def log_file(self) -> Path:
        return log_file(self.state_dir, self.name)

    def describe_readiness(self) -> str:
        if self.readiness:
            return self.readiness
        return f"accepting connections on {self.host}:{self.port}" if self.port else "ready"


@dataclass(frozen=True)
class Record:
    """A process the supervisor started: pid, the argv it was given, its kernel start time."""

    pid: int
    argv: tuple[str, ...]
    start_ticks: int

    def is_running(self) -> bool:
        """Still alive, still the command we started, not a reused pid.

        Our own unreaped child is asked directly: just after it starts, the kernel may not
        have set its new command line yet (seen in about half of the starts of a script run
        by its shebang), and while we hold it its pid cannot belong to anyone else.
        """
        _reap(self.pid)
        if procfs.start_ticks(self.pid) != self.start_ticks:
            return False
        if self.pid in _CHILDREN:
            return True
        return procfs.is_alive(self.pid) and procfs.runs_argv(self.pid, list(self.argv))


@dataclass(frozen=True)
class Stopped:
    """What `stop` did, in the words `make stop` and `make down` print."""

    stopped: bool
    detail: str

    def __str__(self) -> str:
        return self.detail


@dataclass(frozen=True)
class Status:
    name: str
    pid: int | None
    answers: bool | None  # None: the service has no port

    def __str__(self) -> str:
        state = f"running (pid {self.pid})" if self.pid is not None else "not running"
        if self.answers is not None:
            state += ", port answers" if self.answers else ", port does not answer"
        return f"{self.name}: {state}"


def pid_file(state_dir: Path, name: str) -> Path:
    return state_dir / f"{name}.pid"


def log_file(state_dir: Path, name: str) -> Path:
    return state_dir / f"{name}.log"


def read_record(path: Path) -> Record | None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        details = json.loads(lines[1])
        argv = tuple(str(arg) for arg in details["argv"])
        return Record(pid=int(lines[0]), argv=argv, start_ticks=int(details["start"]))
    except (OSError, ValueError, IndexError, KeyError, TypeError):
        return None


def _write_record(path: Path, record: Record) -> None:
    details = json.dumps({"argv": list(record.argv), "start": record.start_ticks})
    path.write_text(f"{record.pid}\n{details}\n", encoding="utf-8")


def running(*, name: str, state_dir: Path) -> Record | None:
    """The recorded process if it still runs the recorded command, else None."""
    record = read_record(pid_file(state_dir, name))
    return record if record is not None and record.is_running() else None


def port_answers(host: str, port: int, *, timeout_s: float = 1.0) -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        return sock.connect_ex((host, port)) == 0


def status(
    *, name: str, state_dir: Path, host: str = "127.0.0.1", port: int | None = None
) -> Status:
    record = running(name=name, state_dir=state_dir)
    answers = port_answers(host, port) if port else None
    return Status(name=name, pid=record.pid if record else None, answers=answers)


def start(service: Service, *, timeout_s: float, ready: Callable[[], bool] | None = None) -> Record:
    """Start `service` and return once it is ready (its port answers, then `ready()`).

    Refuses when a live copy is recorded or its port is already taken (a foreign listener
    would look ready). On failure what was started is stopped and the log's tail quoted.
    """
    live = running(name=service.name, state_dir=service.state_dir)
    if live is not None:
        raise AlreadyRunning(
            f"{service.label} already runs (pid {live.pid}, recorded in {service.pid_file}); "
            "stop it first"
        )
    if service.port and port_answers(service.host, service.port):
        raise PortTaken(
            f"{service.host}:{service.port} is already used by a process that "
            f"{service.pid_file} does not record"
        )
    record, offset = _spawn(service)
    wait_until_ready(service, record, timeout_s=timeout_s, ready=ready, log_offset=offset)
    return record


def wait_until_ready(
    service: Service,
    record: Record,
    *,
    timeout_s: float,
    ready: Callable[[], bool] | None = None,
    log_offset: int = 0,
) -> None:
    """Return once the service answers; if it dies or stays silent, stop it and raise.

    A service that runs but never answers would hold the port and the pid file, so it is
    stopped rather than left for the user to find.
    """
    child = _CHILDREN.get(record.pid)  # kept here: is_running() forgets a reaped child
    deadline = time.monotonic() + timeout_s
    while record.is_running():
        if _is_ready(service, ready):
            return
        if time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    exited = not record.is_running()
    _terminate_group(record.pid, grace_s=STOP_GRACE_S, first_signal=service.stop_signal)
    service.pid_file.unlink(missing_ok=True)
    tail = log_tail(service.log_file, offset=log_offset)
    readiness = service.describe_readiness()
    if exited:
        code = child.returncode if child is not None else None
        what = f"exited{'' if code is None else f' with code {code}'} before {readiness}"
    else:
        what = f"(pid {record.pid}) was not yet {readiness} after {timeout_s:.0f} s"
    raise StartFailed(
        f"{service.label} {what}; last lines of {service.log_file}:\n{tail}",
        log_tail=tail,
        timed_out=not exited,
    )


def stop(
    *,
    name: str,
    state_dir: Path,
    grace_s: float = STOP_GRACE_S,
    first_signal: signal.Signals | None = None,
) -> Stopped:
    """Stop the recorded process and its process group; always remove the pid file.

    `first_signal`, when given, goes to the leader alone first (a Service's stop_signal).
    """
    path = pid_file(state_dir, name)
    record = read_record(path)
    if record is None:
        if path.exists():
            path.unlink()
            return Stopped(stopped=False, detail="unreadable pid file removed, nothing signalled")
        return Stopped(stopped=False, detail="not running")
    if not record.is_running():
        path.unlink(missing_ok=True)
        return Stopped(
            stopped=False,
            detail=f"pid {record.pid} no longer runs the recorded command, nothing signalled",
        )
    how = _terminate_group(record.pid, grace_s=grace_s, first_signal=first_signal)
    path.unlink(missing_ok=True)
    return Stopped(stopped=True, detail=f"stopped pid {record.pid} ({how})")


def log_tail(path: Path, *, offset: int = 0, lines: int = LOG_TAIL_LINES) -> str:
    """The last non-blank lines written to `path` after `offset`."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:]) or "(empty log)"


def _spawn(service: Service) -> tuple[Record, int]:
    """Start the command in its own session and record it; also return the log offset.

    The offset lets errors quote only this attempt's lines of an appended log.
    """
    service.state_dir.mkdir(parents=True, exist_ok=True)
    with service.log_file.open("ab") as log:
        offset = log.tell()
        process = subprocess.Popen(
            list(service.argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=service.cwd,
            env=dict(service.env) if service.env is not None else None,
            start_new_session=True,
            **user_options(service.user),
        )
    _CHILDREN[process.pid] = process
    ticks = procfs.start_ticks(process.pid)
    record = Record(pid=process.pid, argv=service.argv, start_ticks=-1 if ticks is None else ticks)
    _write_record(service.pid_file, record)
    return record, offset


def _is_ready(service: Service, ready: Callable[[], bool] | None) -> bool:
    if service.port and not port_answers(service.host, service.port):
        return False
    return ready is None or ready()


def user_options(user: str | None) -> dict[str, Any]:
    """subprocess options that run a command as `user` with its groups (as `setpriv
    --reuid --regid --init-groups` would); none when `user` is None."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    groups = os.getgrouplist(user, entry.pw_gid)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": groups}


def _terminate_group(
    pgid: int, *, grace_s: float, first_signal: signal.Signals | None = None
) -> str:
    """SIGTERM the group, wait, then SIGKILL whatever is left of it; say which was needed.

    The leader was started as a session (and group) leader, so its helpers share its id.
    `first_signal` goes to the leader alone before that, for a clean shutdown.
    """
    if first_signal is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pgid, first_signal)
        if _group_gone(pgid, grace_s=grace_s):
            return first_signal.name
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        if _group_gone(pgid, grace_s=grace_s):
            return sig.name
    left = procfs.group_members(pgid)
    return f"SIGKILL, still running: {left}" if left else "SIGKILL"


def _group_gone(pgid: int, *, grace_s: float) -> bool:
    """Wait up to `grace_s` for the group to empty (reaping our child); True if it did."""
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        _reap(pgid)
        if not procfs.group_members(pgid):
            _reap(pgid, wait_s=grace_s)  # the group is empty, but our child may still
            return True  # be a zombie until it is waited for
        time.sleep(POLL_S)
    return False


def _reap(pid: int, *, wait_s: float = 0.0) -> None:
    """Collect the exit status of a child of ours that ended (waiting up to `wait_s`), so
    it is no zombie."""
    child = _CHILDREN.get(pid)
    if child is None:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=wait_s) if wait_s else child.poll()
    if child.returncode is not None:
        del _CHILDREN[pid]
