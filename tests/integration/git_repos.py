"""Throwaway git repositories as build contexts (`file://` URLs), shared by the Kubernetes
runner's integration, fault and end-to-end tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path


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


def make_repo(root: Path, containerfile: str, files: Mapping[str, str] | None = None) -> str:
    """A one-commit repository on `main` with this Containerfile (and other files)."""
    root.mkdir()
    git("init", "--quiet", "--initial-branch=main", cwd=root)
    (root / "Containerfile").write_text(containerfile)
    for name, text in (files or {}).items():
        (root / name).write_text(text)
    git("add", ".", cwd=root)
    git("commit", "--quiet", "-m", "build me", cwd=root)
    return f"file://{root}"
