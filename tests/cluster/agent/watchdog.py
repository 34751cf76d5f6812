"""Clean up after a test process that died without teardown (SIGKILL, CI timeout).

Pods' processes live in their own sessions and cgroups, so they would outlive a killed
pytest. Each cluster starts this watchdog with a pipe on its stdin: a normal stop writes
`disarm` and closes it; end-of-file without that word means the test process is gone,
so the watchdog kills the cluster's cgroup tree (mounts live in the containers' own
mount namespaces and go with their processes).

    python -m tests.cluster.agent.watchdog --cgroup DIR
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from pathlib import Path

DISARM = b"disarm"
REPO_ROOT = Path(__file__).resolve().parents[3]


def start(cgroup: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-E", "-m", "tests.cluster.agent.watchdog", "--cgroup", str(cgroup)]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, cwd=REPO_ROOT, start_new_session=True)


def disarm(watchdog: subprocess.Popen[bytes]) -> None:
    assert watchdog.stdin is not None
    with contextlib.suppress(BrokenPipeError):
        watchdog.stdin.write(DISARM)
        watchdog.stdin.close()
    watchdog.wait(timeout=10)


def _kill(cgroup: Path) -> None:
    with contextlib.suppress(OSError):
        (cgroup / "cgroup.kill").write_text("1")
    for _ in range(50):  # the kernel needs a moment to empty the cgroups
        with contextlib.suppress(OSError):
            for path in sorted(cgroup.rglob("*"), key=lambda p: -len(p.parts)):
                if path.is_dir():
                    path.rmdir()
            cgroup.rmdir()
            return
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.agent.watchdog")
    parser.add_argument("--cgroup", type=Path, required=True)
    args = parser.parse_args()
    if sys.stdin.buffer.read() != DISARM:
        _kill(args.cgroup)


if __name__ == "__main__":
    main()
