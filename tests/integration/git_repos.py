"""Throwaway git repositories as build contexts, shared by the Kubernetes runner's
integration, fault and end-to-end tests.

Pods run inside the builder image, not on the host's filesystem, so a `file://` URL means
nothing to them. A cluster's pods reach repositories over the network; here that is
`git daemon` on 127.0.0.1 (pods share the host's network), serving the session's
temporary directory read-only over `git://`, the way a user's pods reach their Git host.

`serve_dumb_http` is the other end of the range: a bare repository behind a static web
server (Python's http.server), which speaks no git protocol at all ("dumb" HTTP).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import socket
import subprocess
import threading
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


@dataclass(frozen=True)
class DumbHttp:
    """A static web server on 127.0.0.1 over `root`, and which requests it served."""

    root: Path
    port: int
    requests: list[str]

    def publish(self, work_tree: Path, name: str) -> str:
        """A bare copy of `work_tree` under `root`, made servable over dumb HTTP (the
        `info/refs` and `objects/info/packs` files `git update-server-info` writes, which a
        static server hands out as they are); its http:// URL."""
        bare = self.root / name
        subprocess.run(["git", "clone", "--quiet", "--bare", "--", str(work_tree), str(bare)],
                       check=True, capture_output=True)
        subprocess.run(["git", "-C", str(bare), "update-server-info"], check=True,
                       capture_output=True)
        return f"http://127.0.0.1:{self.port}/{name}"


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    """Plain file serving; each request line is recorded instead of printed."""

    served: list[str]

    def log_message(self, format: str, *args: object) -> None:
        self.served.append(self.requestline)


@contextlib.contextmanager
def serve_dumb_http(root: Path) -> Iterator[DumbHttp]:
    """http.server over `root` on 127.0.0.1 (a free port) until the block ends."""
    root.mkdir(parents=True, exist_ok=True)
    served: list[str] = []
    handler = type("Files", (_QuietFiles,), {"served": served})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="dumb-http", daemon=True)
    thread.start()
    try:
        yield DumbHttp(root=root, port=int(server.server_address[1]), requests=served)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def dumb_http(tmp_path: Path) -> Iterator[DumbHttp]:
    """A static web server for this test's repositories, stopped after it."""
    root = tmp_path / "www"
    with serve_dumb_http(root) as server:
        yield server


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections and never answers (a hung server);
    its port."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # the kernel completes the handshakes; nobody ever reads
        yield int(listener.getsockname()[1])
