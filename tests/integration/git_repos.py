"""Throwaway git repositories as build contexts, shared by the Kubernetes runner's
integration, fault and end-to-end tests.

Pods run inside the builder image, not on the host's filesystem, so a `file://` URL means
nothing to them. A cluster's pods reach repositories over the network; here that is
`git daemon` on 127.0.0.1 (pods share the host's network), serving the session's
temporary directory read-only over `git://`, the way a user's pods reach their Git host.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest


def git(*args: str, cwd: Path) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "PATH": os.environ["PATH"],
        "HOME": str(cwd),
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


@dataclass(frozen=True)
class GitDaemon:
    """`git daemon` exporting every repository under `root` (read-only, no push)."""

    root: Path
    port: int

    def url(self, repo: Path) -> str:
        return f"git://127.0.0.1:{self.port}/{repo.resolve().relative_to(self.root)}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve_git(root: Path) -> Iterator[GitDaemon]:
    """Run `git daemon` for `root` until the block ends; wait until it accepts."""
    root = root.resolve()
    port = _free_port()
    process = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1",
         f"--port={port}", f"--base-path={root}", str(root)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                assert process.stderr is not None
                raise RuntimeError(f"git daemon did not start: {process.stderr.read()!r}")
            time.sleep(0.05)
        yield GitDaemon(root=root, port=port)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def git_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitDaemon]:
    """One daemon per session over pytest's base temporary directory, which holds every
    test's `tmp_path`."""
    with serve_git(tmp_path_factory.getbasetemp()) as daemon:
        yield daemon


def make_repo(daemon: GitDaemon, root: Path, containerfile: str,
              files: Mapping[str, str] | None = None) -> str:
    """A one-commit repository on `main` with this Containerfile (and other files), and
    its `git://` URL; `root` must lie under the daemon's root (a test's `tmp_path`)."""
    root.mkdir()
    git("init", "--quiet", "--initial-branch=main", cwd=root)
    (root / "Containerfile").write_text(containerfile)
    for name, text in (files or {}).items():
        (root / name).write_text(text)
    git("add", ".", cwd=root)
    git("commit", "--quiet", "-m", "build me", cwd=root)
    return daemon.url(root)
