"""Start one container's process in its image, in a private mount namespace.

What runc does for containerd, within reason. Run as

    python -m tests.cluster.agent.launch --rootfs LOWER --container-dir DIR [--privileged]
        --bind HOSTPATH:MOUNTPATH[:ro] ... [--workdir DIR] [--hostname NAME]
        [--cgroup DIR] [--start-error FILE] -- ARGV...

it unshares the mount (and UTS) namespace and makes `/` rprivate, so every mount below
exists in the container's namespace only and vanishes with its last process (a killed
agent leaves no mount on the host). Then: an overlay of the image's cached root
filesystem (LOWER, never written) with upper/work under DIR (the container's writable
layer, removed with the pod); /proc; /dev (privileged: the host's /dev; otherwise a
tmpfs with null zero full random urandom tty bound from the host, /dev/shm, /dev/pts,
the fd links; no /dev/fuse, as docs/kubernetes.md says of the minimal profile); /sys
read-only; the binds (volumes, /etc/hosts, /etc/hostname, /etc/resolv.conf, the
termination log), resolved inside the new root so an image's symlinks never point a
mount at the host; pivot_root; the working directory; exec ARGV with the environment
it was started with (PATH from it). Argv only, never a shell. Must run as root.
Without --rootfs the host's filesystem is the image (kept for the launcher's own use).
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
from typing import NoReturn, TextIO

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2
PR_SET_PDEATHSIG = 1
START_ERROR_EXIT = 128  # what runc reports when the process could not be started
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}[os.uname().machine]
MINIMAL_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str | Path, flags: int, fstype: str | None = None,
           data: str | None = None) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None, str(target).encode(),
            fstype.encode() if fstype else None, ctypes.c_ulong(flags),
            data.encode() if data else None,
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


def in_root(root: Path, path: str) -> Path:
    """`path` inside `root`, following the image's symlinks as if `root` were `/`."""
    current = root
    parts = [p for p in Path(path).parts if p not in ("/", "", ".")]
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = current.parent if current != root else root
            continue
        candidate = current / part
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                raise OSError(40, f"too many levels of symbolic links in {path}")
            link = os.readlink(candidate)
            if link.startswith("/"):
                current = root
            parts = [p for p in Path(link).parts if p not in ("/", "", ".")] + parts
            continue
        current = candidate
    return current


def parse_bind(text: str) -> tuple[Path, Path, bool]:
    read_only = text.endswith(":ro")
    source, _, target = text.removesuffix(":ro").partition(":")
    if not source or not target.startswith("/"):
        raise argparse.ArgumentTypeError(f"expected HOSTDIR:MOUNTPATH[:ro], got {text!r}")
    return Path(source), Path(target), read_only


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.agent.launch")
    parser.add_argument("--bind", action="append", default=[], type=parse_bind)
    parser.add_argument("--rootfs", type=Path, help="the image's unpacked root (read-only)")
    parser.add_argument("--container-dir", type=Path, help="upper, work and merged go here")
    parser.add_argument("--privileged", action="store_true")
    parser.add_argument("--workdir")
    parser.add_argument("--hostname")
    parser.add_argument("--start-error", type=Path, help="write why exec failed here")
    parser.add_argument("--cgroup", type=Path, help="join this cgroup (v2) first")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    # Opened before pivot_root: the host path is out of reach afterwards.
    report = args.start_error.open("w") if args.start_error is not None else None
    try:
        # Die with the fake kubelet's thread even if the test process is killed outright.
        _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
        if args.cgroup is not None:
            (args.cgroup / "cgroup.procs").write_text(str(os.getpid()))
        _enter_namespace(args.bind, hostname=args.hostname, workdir=args.workdir,
                         rootfs=args.rootfs, container_dir=args.container_dir,
                         privileged=args.privileged)
    except OSError as exc:
        _fail(report, f"error during container init: {exc}")
    if not command:
        _fail(report, "no command specified")
    try:
        os.execvpe(command[0], command, dict(os.environ))
    except OSError as exc:
        why = (
            "executable file not found in $PATH"
            if isinstance(exc, FileNotFoundError)
            else exc.strerror or str(exc)
        )
        _fail(report, f'exec: "{command[0]}": {why}')


def _enter_namespace(
    binds: list[tuple[Path, Path, bool]], *, hostname: str | None, workdir: str | None,
    rootfs: Path | None = None, container_dir: Path | None = None, privileged: bool = False,
) -> None:
    _check(_libc.unshare(CLONE_NEWNS | (CLONE_NEWUTS if hostname else 0)), "unshare")
    _mount(None, "/", MS_REC | MS_PRIVATE)
    if hostname:
        socket.sethostname(hostname)
    root = Path("/")
    if rootfs is not None:
        if container_dir is None:
            raise OSError(22, "--rootfs needs --container-dir")
        root = _overlay(rootfs, container_dir)
        _system_mounts(root, privileged=privileged)
    # Parents first, so a volume mounted inside another one lands in the right place.
    for source, target, read_only in sorted(binds, key=lambda b: len(b[1].parts)):
        bind(source, in_root(root, str(target)), read_only=read_only)
    if rootfs is not None:
        os.chdir(root)
        _check(_libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
        _check(_libc.umount2(b".", MNT_DETACH), "umount the old root")
        os.chdir("/")
    if workdir:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        os.chdir(workdir)


def _overlay(rootfs: Path, container_dir: Path) -> Path:
    """The container's writable layer over the image (the cache is never written)."""
    upper, work, merged = (container_dir / d for d in ("upper", "work", "merged"))
    for directory in (upper, work, merged):
        directory.mkdir(parents=True, exist_ok=True)
    _mount("overlay", merged, 0, "overlay",
           f"lowerdir={rootfs},upperdir={upper},workdir={work}")
    return merged


def _system_mounts(root: Path, *, privileged: bool) -> None:
    """/proc, /dev and /sys as runc sets them up for a container."""
    proc = in_root(root, "/proc")
    proc.mkdir(parents=True, exist_ok=True)
    _mount("proc", proc, MS_NOSUID | MS_NODEV | MS_NOEXEC, "proc")
    dev = in_root(root, "/dev")
    dev.mkdir(parents=True, exist_ok=True)
    if privileged:
        _mount("/dev", dev, MS_BIND | MS_REC)
    else:
        _mount("tmpfs", dev, MS_NOSUID, "tmpfs", "mode=755,size=65536k")
        for name in MINIMAL_DEVICES:
            (dev / name).touch()
            _mount(f"/dev/{name}", dev / name, MS_BIND)
        (dev / "shm").mkdir()
        _mount("shm", dev / "shm", MS_NOSUID | MS_NODEV | MS_NOEXEC, "tmpfs",
               "mode=1777,size=65536k")
        (dev / "pts").mkdir()
        _mount("devpts", dev / "pts", MS_NOSUID | MS_NOEXEC, "devpts",
               "newinstance,ptmxmode=0666,mode=0620")
        (dev / "ptmx").symlink_to("pts/ptmx")
        for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
            (dev / link).symlink_to(target)
    sys_dir = in_root(root, "/sys")
    sys_dir.mkdir(parents=True, exist_ok=True)
    _mount("sysfs", sys_dir, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "sysfs")


def _fail(report: TextIO | None, reason: str) -> NoReturn:
    """Report like runc does when a container cannot start, and exit 128."""
    message = (
        "failed to create containerd task: failed to create shim task: OCI runtime "
        f"create failed: runc create failed: unable to start container process: "
        f"{reason}: unknown"
    )
    if report is not None:
        report.write(message)
        report.close()
    print(message, file=sys.stderr)
    raise SystemExit(START_ERROR_EXIT)


if __name__ == "__main__":
    main()
