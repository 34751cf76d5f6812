"""`RUN --mount=type=cache` that persists between runs, per architecture, on one worker.

buildah keeps cache mounts under `$TMPDIR/buildah-cache[-UID]/<id or target>`, and each build's
TMPDIR here is its own scratch (so that a killed build's RUN bundles are where the sweep
looks): the cache was empty on every run. Each build's `buildah-cache` is instead a link
to `<work_dir>/cache-mounts/<platform>/`, kept between runs. One directory per platform
(linux-arm-v7 apart from linux-arm64): a cache of compiled objects or downloaded wheels
from another architecture would be wrong, not merely slow.

Concurrent builds of one platform share the directory (BuildKit's default `sharing=shared`;
`sharing=locked` is buildah's own lock). Each build holds a shared lock on it while it
runs; `multiarch gc` removes a directory only when it takes the exclusive lock without
waiting, so a cache in use is never pruned under a build.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from multiarch.platforms import Platform

CACHE_MOUNTS_DIR = "cache-mounts"
# buildah's names under $TMPDIR: `buildah-cache` up to 1.28 (internal/parse), then
# `buildah-cache-<uid>` (internal/volumes.CacheParent; 1.39 measured). Both are linked.
BUILDAH_CACHE_NAMES = ("buildah-cache", f"buildah-cache-{os.getuid()}")
LAST_USED = ".multiarch-last-used"
DEFAULT_MAX_AGE_S = 7 * 24 * 3600


def cache_dir(work: Path, platform: Platform) -> Path:
    return work / CACHE_MOUNTS_DIR / platform.slug


@contextlib.contextmanager
def _locked(directory: Path, kind: int) -> Iterator[None]:
    fd = os.open(f"{directory}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, kind)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def cache_mounts(work: Path, platform: Platform, *, tmpdir: Path) -> Iterator[Path]:
    """Link buildah's cache parent in `tmpdir` to the platform's cache for the duration
    of a build."""
    directory = cache_dir(work, platform)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with _locked(directory, fcntl.LOCK_SH):  # then made: a prune may just have removed it
        directory.mkdir(exist_ok=True)
        (directory / LAST_USED).touch()
        for name in BUILDAH_CACHE_NAMES:
            link = tmpdir / name
            link.unlink(missing_ok=True)
            link.symlink_to(directory, target_is_directory=True)
        yield directory


def prune(work: Path, *, max_age_s: float = DEFAULT_MAX_AGE_S,
          now: float | None = None) -> list[Path]:
    """Remove the platform caches last used more than `max_age_s` ago (0: every one) that
    no build is using; returns what was removed."""
    root = work / CACHE_MOUNTS_DIR
    now = time.time() if now is None else now
    removed = []
    for directory in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        with contextlib.suppress(BlockingIOError), \
                _locked(directory, fcntl.LOCK_EX | fcntl.LOCK_NB):
            stamp = directory / LAST_USED
            used = stamp.stat().st_mtime if stamp.exists() else 0.0
            if now - used >= max_age_s:
                shutil.rmtree(directory, ignore_errors=True)  # the lock file stays
                removed.append(directory)
    return removed
