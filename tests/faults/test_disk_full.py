"""Disk full on the shared directory mid-build: a permanent failure, said once, with nothing left.

The shared directory is a small tmpfs of its own (large enough for preflight's free-space
check); once the RUN step has started, the test fills it, so the export of the built image
into its OCI layout meets ENOSPC for real.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from multiarch.runclaim import mounts_under
from tests.integration.conftest import tag_digest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
MARKER = "disk-full-test-marker"
TMPFS_SIZE = "1200m"


@pytest.fixture
def small_shared_dir(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "shared-tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount)],
                   check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


def fill(directory: Path) -> None:
    """Write until the file system is full (a filler the test owns, not the run)."""
    chunk = b"\0" * (4 << 20)
    with (directory / "filler").open("wb") as filler:
        with contextlib.suppress(OSError):
            while True:
                filler.write(chunk)
                filler.flush()
        with contextlib.suppress(OSError):
            os.fsync(filler.fileno())


def test_disk_full_on_the_shared_directory_fails_once_and_leaves_nothing(
    playground, tmp_path, small_shared_dir, record_scenario
):
    tag = f"t{uuid.uuid4().hex[:8]}"
    context = tmp_path / "context"
    context.mkdir()
    (context / "Containerfile").write_text(
        f"FROM {playground.base}\nRUN echo {MARKER} && sleep 3 && head -c 2000000 "
        "/dev/urandom > /payload\n"
    )
    work = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "build",
         "--image", f"{playground.address}/tests/diskfull:{tag}",
         "--platform", "linux/amd64", "--context", str(context),
         "--insecure-registry", "--work-dir", str(work),
         "--shared-dir", str(small_shared_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO_ROOT,
    )
    lines: list[str] = []
    filled = threading.Event()

    def collect() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if MARKER in line and "echo" not in line and not filled.is_set():
                fill(small_shared_dir)
                filled.set()

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    code = process.wait(timeout=600)
    reader.join(timeout=10)
    output = "\n".join(lines)
    assert filled.is_set(), output[-3000:]
    assert code != 0, output[-3000:]
    failure = [line for line in lines if "no space left on device" in line.lower()]
    assert failure, output[-3000:]
    # Permanent: one attempt, not three full builds.
    assert output.count("step export:") == 1, output[-3000:]
    assert "AwaitingRetry" not in output
    assert tag_digest(f"{playground.address}/tests/diskfull:{tag}") is None
    (small_shared_dir / "filler").unlink()
    assert sorted(p.name for p in small_shared_dir.iterdir()) == [], "the run's layouts stay"
    assert not (work / "builds").exists() or list((work / "builds").iterdir()) == []
    assert mounts_under(work) == []
    last = failure[-1].strip()
    said = last[last.lower().index("no space left"):][:220]
    record_scenario(
        "disk full on the shared directory during the export of a platform",
        f"the platform fails once, not retried: `{said}`; nothing is pushed",
        "nothing (the run's handoff and build directories are removed)",
    )

