"""The fake container runtime: one container = one host process tree, logged and killable.

Each container runs through `launch.py` (its image's root filesystem under an overlay,
in a private mount namespace with its volumes) in
its own session and, where the kernel offers a writable cgroup v2 hierarchy, its own
cgroup, the way the kubelet tracks containers: killing a pod must also kill what buildah
forked (chroot helpers, qemu), and a test must leave nothing running. Output is read
line by line into the pod's log as it is produced, stdout and stderr apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.cluster.agent import watchdog
from tests.cluster.agent.kubeapi import now_rfc3339
from tests.cluster.agent.logs import ContainerLog

REPO_ROOT = watchdog.REPO_ROOT
READ_LIMIT = 1 << 20  # longest line kept whole; longer ones arrive in pieces


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion in command, args and env values; `$$` is a `$`."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i) and (end := text.find(")", i + 2)) != -1:
            name = text[i + 2 : end]
            out.append(env.get(name, text[i : end + 1]))
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _cgroup2_root() -> Path | None:
    """A writable cgroup v2 mount (with cgroup.kill), or None on machines without one."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        if after.startswith("cgroup2 "):
            root = Path(before.split()[4])
            probe = root / f"multiarch-agent-probe-{secrets.token_hex(4)}"
            try:
                probe.mkdir()
            except OSError:
                continue
            usable = (probe / "cgroup.kill").exists()
            probe.rmdir()
            if usable:
                return root
    return None


class Cgroups:
    """Per-container cgroups under one directory per cluster; optional. A watchdog kills
    them all if the test process dies without teardown (see `watchdog.py`), and a new
    cluster reaps what a crashed one left."""

    def __init__(self) -> None:
        root = _cgroup2_root()
        self.base: Path | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        if root is None:
            return
        for stale in root.glob("multiarch-agent-*-*"):
            owner = stale.name.split("-")[2]
            if owner.isdigit() and not Path(f"/proc/{owner}").exists():
                _remove_tree(stale)
        self.base = root / f"multiarch-agent-{os.getpid()}-{secrets.token_hex(3)}"
        self.base.mkdir()
        self._watchdog = watchdog.start(self.base)

    def create(self, *parts: str) -> Path | None:
        if self.base is None:
            return None
        path = self.base.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def pids(group: Path) -> list[int]:
        with contextlib.suppress(OSError):
            return [int(p) for p in (group / "cgroup.procs").read_text().split()]
        return []

    @staticmethod
    def kill(group: Path) -> None:
        with contextlib.suppress(OSError):
            (group / "cgroup.kill").write_text("1")

    def remove_all(self) -> None:
        if self._watchdog is not None:
            watchdog.disarm(self._watchdog)
            self._watchdog = None
        if self.base is not None:
            _remove_tree(self.base)


def _remove_tree(base: Path) -> None:
    """Kill every process in a cgroup tree, then remove its directories."""
    Cgroups.kill(base)
    for path in [*sorted(base.rglob("*"), key=lambda p: -len(p.parts)), base]:
        if path.is_dir():
            with contextlib.suppress(OSError):
                path.rmdir()


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [root]
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = False

    def arg(self) -> str:
        return f"{self.source}:{self.target}" + (":ro" if self.read_only else "")


class ContainerProcess:
    """One started container; `wait()` gives the exit code a container runtime reports."""

    def __init__(
        self,
        *,
        argv: Sequence[str],
        env: Mapping[str, str],
        mounts: Sequence[Mount],
        workdir: str | None,
        hostname: str,
        log: ContainerLog,
        state_dir: Path,
        cgroup: Path | None,
        rootfs: Path | None = None,
        privileged: bool = False,
    ) -> None:
        self.argv, self.env, self.mounts = list(argv), dict(env), list(mounts)
        self.rootfs, self.privileged, self.state_dir = rootfs, privileged, state_dir
        self.workdir, self.hostname, self.log = workdir, hostname, log
        self.start_error = state_dir / "start-error"
        self.cgroup = cgroup
        self.started_at = ""
        self.finished_at = ""
        self.killed_by: str | None = None  # "OOMKilled" when a hook killed it that way
        self._process: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []

    def launcher_argv(self) -> list[str]:
        argv = [
            sys.executable,
            "-E",
            "-m",
            "tests.cluster.agent.launch",
            "--hostname",
            self.hostname,
            "--start-error",
            str(self.start_error),
        ]
        if self.rootfs is not None:
            argv += ["--rootfs", str(self.rootfs), "--container-dir", str(self.state_dir)]
        if self.privileged:
            argv.append("--privileged")
        for mount in self.mounts:
            argv += ["--bind", mount.arg()]
        if self.workdir:
            argv += ["--workdir", self.workdir]
        if self.cgroup is not None:
            argv += ["--cgroup", str(self.cgroup)]
        return [*argv, "--", *self.argv]

    async def start(self) -> None:
        self.start_error.unlink(missing_ok=True)
        self._process = await asyncio.create_subprocess_exec(
            *self.launcher_argv(),
            cwd=REPO_ROOT,
            env=self.env,
            start_new_session=True,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=READ_LIMIT,
        )
        self.started_at = now_rfc3339()
        assert self._process.stdout is not None and self._process.stderr is not None
        self._readers = [
            asyncio.create_task(self._read(self._process.stdout, "stdout")),
            asyncio.create_task(self._read(self._process.stderr, "stderr")),
        ]

    async def _read(self, stream: asyncio.StreamReader, name: str) -> None:
        while True:
            try:
                data = await stream.readline()
            except (asyncio.LimitOverrunError, ValueError):
                data = await stream.read(READ_LIMIT)
            if not data:
                return
            self.log.append(name, data)

    async def wait(self) -> int:
        assert self._process is not None
        code = await self._process.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)
        self.log.finish()  # followers of this container's log get their end of stream
        self.finished_at = now_rfc3339()
        self.kill_all()  # whatever the main process left behind dies with the container
        return 128 - code if code < 0 else code

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def start_error_message(self) -> str:
        with contextlib.suppress(OSError):
            return self.start_error.read_text()
        return ""

    def signal_all(self, sig: signal.Signals) -> None:
        if self._process is None:
            return
        pids = set(_descendants(self._process.pid))
        if self.cgroup is not None:
            pids.update(Cgroups.pids(self.cgroup))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, sig)

    def kill_all(self) -> None:
        if self.cgroup is not None:
            Cgroups.kill(self.cgroup)
        self.signal_all(signal.SIGKILL)

    async def stop(self, grace_s: float) -> None:
        """SIGTERM, then SIGKILL after the grace period, like the kubelet."""
        if not self.running:
            return
        self.signal_all(signal.SIGTERM)
        assert self._process is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._process.wait()), grace_s)
        except TimeoutError:
            self.kill_all()
