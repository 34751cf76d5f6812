"""Shared benchmark plumbing: settings, timing, statistics, byte counts, the playground.

Benchmarks report, they do not assert: nothing here compares a timing with a target.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.playground import base_image, ensure_base_image
from devtools.registry import LocalRegistry, free_port, start_registry, stop_registry
from multiarch.emulation import ensure_emulation
from multiarch.runners.local.runner import remove_scratch

LOG = logging.getLogger("bench")
DRIVER = "overlay"  # the project's default local storage driver


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What one `make bench` measures; BENCH_QUICK=1 shrinks everything to a smoke run."""

    work: Path
    quick: bool = False
    reps: int = 5  # measured runs per variant, after the warm-up
    warmup: int = 1
    sizes_mb: tuple[int, ...] = (50, 200, 500)  # B1 image sizes (per platform, uncompressed)
    random_fraction: float = 0.4  # incompressible share of the B1 payload
    b2_small_loops: int = 0  # B2 "small build": no CPU work beyond busybox startup
    b2_large_loops: int = 15_000_000  # ~25 s of busybox sh loop on this machine
    b3_loops: int = 600_000  # ~1 s native, ~12 s under QEMU on this machine
    b4_work: int = 8_000_000  # B4 heavy RUN, `seq | gzip -9` lines: 5-10 s native, 40-90 s QEMU
    benches: tuple[str, ...] = ("b1", "b2", "b3", "b4")
    b2_cases: tuple[str, ...] = ("small", "large")


def settings_from_env(work: Path, benches: Sequence[str] | None = None) -> Settings:
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    chosen = tuple(benches) if benches else ("b1", "b2", "b3", "b4")
    if quick:
        base = Settings(
            work=work, quick=True, reps=1, warmup=0, sizes_mb=(4,), b2_large_loops=200_000,
            b3_loops=50_000, b4_work=200_000, benches=chosen,
        )
    else:
        base = Settings(work=work, benches=chosen)
    reps = int(os.environ.get("BENCH_REPS", base.reps))
    sizes = os.environ.get("BENCH_SIZES_MB")
    return Settings(
        work=work, quick=base.quick, reps=reps, warmup=base.warmup,
        sizes_mb=tuple(int(s) for s in sizes.split(",")) if sizes else base.sizes_mb,
        random_fraction=base.random_fraction, b2_small_loops=base.b2_small_loops,
        b2_large_loops=base.b2_large_loops, b3_loops=base.b3_loops, b4_work=base.b4_work,
        benches=chosen,
    )


class CommandFailed(RuntimeError):
    pass


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 3600) -> str:
    """Run a command to completion; raise with its stderr tail when it fails."""
    full_env = {**os.environ, **(env or {})}
    done = subprocess.run(
        list(argv), capture_output=True, text=True, env=full_env, timeout=timeout, check=False
    )
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise CommandFailed(f"{' '.join(argv[:4])} ... exited {done.returncode}: {tail}")
    return done.stdout


def timed_run(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> float:
    started = time.perf_counter()
    run(argv, env=env)
    return time.perf_counter() - started


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median and spread; the raw values are kept so anyone can recompute."""
    ordered = sorted(values)
    if len(ordered) >= 4:
        q1, _, q3 = statistics.quantiles(ordered, n=4)
    else:
        q1, q3 = ordered[0], ordered[-1]
    return {
        "n": len(ordered),
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "q1": q1,
        "q3": q3,
        "values": list(values),
    }


def dir_bytes(path: Path) -> int:
    """Bytes of regular files under `path`, each inode once (hard links are not copies)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                stat = os.lstat(os.path.join(root, name))
                key = (stat.st_dev, stat.st_ino)
                if key not in seen and not os.path.islink(os.path.join(root, name)):
                    seen.add(key)
                    total += stat.st_size
    return total


@dataclass(frozen=True, kw_only=True)
class Store:
    """One private container storage on local disk, like every build of the project."""

    root: Path

    @property
    def flags(self) -> list[str]:
        return [
            "--root", str(self.root / "root"), "--runroot", str(self.root / "runroot"),
            "--storage-driver", DRIVER,
        ]

    def ref(self, image: str) -> str:
        return f"containers-storage:[{DRIVER}@{self.root / 'root'}+{self.root / 'runroot'}]{image}"

    def remove(self) -> None:
        remove_scratch(self.root)


def buildah_build(
    store: Store, *, context: Path, platform_text: str, tag: str, build_args: Mapping[str, str]
) -> float:
    argv = ["buildah", *store.flags, "build", "--isolation", "chroot", "--platform", platform_text,
            "--tls-verify=false"]
    for key, value in build_args.items():
        argv += ["--build-arg", f"{key}={value}"]
    argv += ["--tag", tag, str(context)]
    return timed_run(argv, env={"BUILDAH_ISOLATION": "chroot"})


@contextlib.contextmanager
def fresh_registry(state_dir: Path) -> Iterator[LocalRegistry]:
    """A registry of its own (new port, empty storage): no blob can be mounted or reused
    from an earlier run, and its storage growth is exactly what this run pushed."""
    shutil.rmtree(state_dir, ignore_errors=True)
    registry = start_registry(state_dir=state_dir, port=free_port())
    try:
        yield registry
    finally:
        stop_registry(state_dir=state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


@dataclass(kw_only=True)
class Playground:
    """The registry with the busybox base image every benchmark builds FROM."""

    registry: LocalRegistry
    base: str
    state_dir: Path
    owned: bool = True
    cleanups: list[Path] = field(default_factory=list)


@contextlib.contextmanager
def playground(state_dir: Path) -> Iterator[Playground]:
    registry = start_registry(state_dir=state_dir / "registry", port=free_port())
    try:
        ensure_emulation("arm64")
        ensure_base_image(registry.address, state_dir=state_dir, log=LOG)
        yield Playground(registry=registry, base=base_image(registry.address), state_dir=state_dir)
    finally:
        stop_registry(state_dir=state_dir / "registry")


def tool_version(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        return f"unavailable ({exc})"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def deb_version(package: str) -> str:
    out = tool_version(["dpkg-query", "-W", "-f", "${Version}", package])
    return out or "?"


def machine_info(work: Path) -> dict[str, Any]:
    import prefect

    fs = tool_version(["findmnt", "-n", "-o", "FSTYPE", "--target", str(work)])
    return {
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "storage_driver": DRIVER,
        "work_filesystem": fs,
        "buildah": tool_version(["buildah", "--version"]),
        "skopeo": tool_version(["skopeo", "--version"]),
        "qemu_user_static": deb_version("qemu-user-static"),
        "docker_registry": deb_version("docker-registry"),
        "prefect": prefect.__version__,
    }
