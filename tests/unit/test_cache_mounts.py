"""RUN --mount=type=cache directories: one per platform, kept, pruned only when unused."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from multiarch.cache_mounts import LAST_USED, cache_dir, cache_mounts, prune
from multiarch.platforms import Platform

ARM64 = Platform.parse("linux/arm64")
ARMV7 = Platform.parse("linux/arm/v7")


def test_each_platform_links_its_own_directory(tmp_path: Path):
    work, tmpdir = tmp_path / "work", tmp_path / "tmp"
    tmpdir.mkdir()
    with cache_mounts(work, ARM64, tmpdir=tmpdir) as directory:
        assert (tmpdir / "buildah-cache").resolve() == directory == cache_dir(work, ARM64)
        (directory / "pip").mkdir()
    with cache_mounts(work, ARMV7, tmpdir=tmpdir) as other:
        assert other != directory and not (other / "pip").exists()
    assert (cache_dir(work, ARM64) / "pip").is_dir()  # kept after the build


def test_prune_keeps_recent_and_in_use_caches(tmp_path: Path):
    work, tmpdir = tmp_path / "work", tmp_path / "tmp"
    tmpdir.mkdir()
    for platform in (ARM64, ARMV7):
        with cache_mounts(work, platform, tmpdir=tmpdir):
            pass
    old = time.time() - 30 * 86400
    os.utime(cache_dir(work, ARMV7) / LAST_USED, (old, old))
    assert prune(work) == [cache_dir(work, ARMV7)]
    assert cache_dir(work, ARM64).is_dir()
    with cache_mounts(work, ARM64, tmpdir=tmpdir):
        assert prune(work, max_age_s=0) == []  # in use: never pruned under a build
    assert prune(work, max_age_s=0) == [cache_dir(work, ARM64)]


def test_a_build_waiting_on_a_prune_gets_a_fresh_directory(tmp_path: Path):
    work, tmpdir = tmp_path / "work", tmp_path / "tmp"
    tmpdir.mkdir()
    with cache_mounts(work, ARM64, tmpdir=tmpdir):
        pass
    fd = os.open(f"{cache_dir(work, ARM64)}.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a prune holds it
    assert prune(work, max_age_s=0) == []  # a second pruner does not wait
    os.close(fd)
    with cache_mounts(work, ARM64, tmpdir=tmpdir) as directory:
        assert directory.is_dir()
