"""Start one container's process in a private mount namespace with its volumes bound in.

The fake kubelet has no container runtime; the host is the "image". What a Job runner
depends on is that every container sees its volumes at the in-pod paths (`/shared`,
the emptyDir for container storage, the secret) without those paths existing for
anyone else. So this launcher, run as

    python -m tests.cluster.agent.launch --bind HOSTDIR:MOUNTPATH[:ro] ... [--workdir DIR]
        [--hostname NAME] [--cgroup DIR] [--start-error FILE] -- ARGV...

unshares the mount (and UTS) namespace, makes `/` rprivate so nothing leaks back to the
host, bind-mounts each volume (remounting read-only where asked) and execs ARGV with the
environment it was started with. Argv only, never a shell. Must run as root.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import signal
import socket
import sys
from pathlib import Path
from typing import NoReturn

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_PDEATHSIG = 1
START_ERROR_EXIT = 128  # what runc reports when the process could not be started

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, flags: int) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None, target.encode(), None, ctypes.c_ulong(flags), None
        ),
        f"mount {source} {target}",
    )


def bind(source: Path, target: Path, *, read_only: bool) -> None:
    if not target.exists():
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
    _mount(str(source), str(target), MS_BIND | MS_REC)
    if read_only:
        _mount(None, str(target), MS_REMOUNT | MS_BIND | MS_RDONLY)


def parse_bind(text: str) -> tuple[Path, Path, bool]:
    read_only = text.endswith(":ro")
    source, _, target = text.removesuffix(":ro").partition(":")
    if not source or not target.startswith("/"):
        raise argparse.ArgumentTypeError(f"expected HOSTDIR:MOUNTPATH[:ro], got {text!r}")
    return Path(source), Path(target), read_only


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.agent.launch")
    parser.add_argument("--bind", action="append", default=[], type=parse_bind)
    parser.add_argument("--workdir")
    parser.add_argument("--hostname")
    parser.add_argument("--start-error", type=Path, help="write why exec failed here")
    parser.add_argument("--cgroup", type=Path, help="join this cgroup (v2) first")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        # Die with the fake kubelet's thread even if the test process is killed outright.
        _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
        if args.cgroup is not None:
            (args.cgroup / "cgroup.procs").write_text(str(os.getpid()))
        _enter_namespace(args.bind, hostname=args.hostname, workdir=args.workdir)
    except OSError as exc:
        _fail(args.start_error, f"error during container init: {exc}")
    if not command:
        _fail(args.start_error, "no command specified")
    try:
        os.execvpe(command[0], command, dict(os.environ))
    except OSError as exc:
        why = (
            "executable file not found in $PATH"
            if isinstance(exc, FileNotFoundError)
            else exc.strerror or str(exc)
        )
        _fail(args.start_error, f'exec: "{command[0]}": {why}')


def _enter_namespace(
    binds: list[tuple[Path, Path, bool]], *, hostname: str | None, workdir: str | None
) -> None:
    _check(_libc.unshare(CLONE_NEWNS | (CLONE_NEWUTS if hostname else 0)), "unshare")
    _mount(None, "/", MS_REC | MS_PRIVATE)
    if hostname:
        socket.sethostname(hostname)
    # Parents first, so a volume mounted inside another one lands in the right place.
    for source, target, read_only in sorted(binds, key=lambda b: len(b[1].parts)):
        bind(source, target, read_only=read_only)
    if workdir:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        os.chdir(workdir)


def _fail(start_error: Path | None, reason: str) -> NoReturn:
    """Report like runc does when a container cannot start, and exit 128."""
    message = (
        "failed to create containerd task: failed to create shim task: OCI runtime "
        f"create failed: runc create failed: unable to start container process: "
        f"{reason}: unknown"
    )
    if start_error is not None:
        start_error.write_text(message)
    print(message, file=sys.stderr)
    raise SystemExit(START_ERROR_EXIT)


if __name__ == "__main__":
    main()
