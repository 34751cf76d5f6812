"""What /proc says about a process: alive, start time, command line, process group.

The supervisor must never signal a process it did not start: a pid file can outlive its
process and the number be reused. The kernel's start time and command line of a pid
tell the two apart; reading /proc needs neither psutil nor a shell.
"""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")
_DEAD_STATES = frozenset({"Z", "X"})  # a zombie keeps its /proc entry until it is reaped


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text(encoding="utf-8")
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()


def is_alive(pid: int) -> bool:
    """Running and not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in _DEAD_STATES


def start_ticks(pid: int) -> int | None:
    """Clock ticks after boot when `pid` started: with the pid, it names one process."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def process_group(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[2]) if fields is not None else None


def cmdline(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def runs_argv(pid: int, argv: list[str]) -> bool:
    """/proc/PID/cmdline is `argv`, or `<interpreter> argv` for a script with a shebang."""
    actual = cmdline(pid)
    return actual == argv or (len(actual) == len(argv) + 1 and actual[1:] == argv)


def group_members(pgid: int) -> list[int]:
    """Live processes of group `pgid`: what is left to stop of a service's tree."""
    pids = (int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit())
    return [pid for pid in pids if process_group(pid) == pgid and is_alive(pid)]
