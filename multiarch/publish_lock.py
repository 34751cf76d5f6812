"""One publish per repository at a time on this machine: an exclusive flock under the work dir.

Registry tags are not transactional. A publish records what each tag holds, writes them
and reads them back; a second run writing the same tags in between makes the record and
the read-back lies (both runs "succeed" with the tags split). Runs on one machine share
the work directory, so a lock file there serialises them, and the kernel releases it
however the holder dies: a killed run never blocks the next one. Runs on other machines
that share a Prefect server are serialised by the Prefect concurrency limit
(tasks/publish.py); this lock covers the CLI with its own temporary server.

The lock is held around the whole publish (push by digest, tag record, tag writes,
verification): pushing by digest is harmless to overlap, but one scope is simpler to
reason about and costs only the by-digest push of a run that waits anyway.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

LOCKS_DIR = "locks"
POLL_INTERVAL_S = 0.2


def lock_path(work: Path, repository: str) -> Path:
    """`<work>/locks/<registry_repository>.lock`: one file per registry/repository name."""
    return work / LOCKS_DIR / (repository.replace("/", "_") + ".lock")


@contextlib.contextmanager
def publish_lock(work: Path, repository: str, *,
                 emit: Callable[[str], None] = lambda _: None) -> Iterator[Path]:
    """Hold the repository's lock for the duration of the block; wait for it if taken.

    Waits by polling (not a blocking flock) so that a cancellation can still interrupt
    the waiting thread, and says once that it waits and for what.
    """
    path = lock_path(work, repository)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, path=path, repository=repository, emit=emit)
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, *, path: Path, repository: str, emit: Callable[[str], None]) -> None:
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if not said:
                emit(f"[publish] waiting for another publish of {repository} ({path})")
                said = True
            time.sleep(POLL_INTERVAL_S)
