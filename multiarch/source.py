"""Pin the build source once, so every platform builds the same revision.

A git ref such as `main` can move while platforms build; resolving it to a commit before
the fan-out is what makes the published index one coherent build.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from multiarch.errors import ConfigurationError, TransientError
from multiarch.request import BuildRequest

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
GIT_TIMEOUT_S = 120
_TRANSIENT_GIT = (
    "could not resolve host",
    "connection timed out",
    "connection reset",
    "early eof",
    "the remote end hung up",
    "temporarily unavailable",
)


class PinnedSource(BaseModel):
    """The source every platform builds: a local directory, or a git URL at one commit."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["local", "git"]
    location: str  # absolute directory, or the git URL
    revision: str | None = None  # commit SHA when known
    ref: str | None = None  # what the user asked for


def pin_source(request: BuildRequest) -> PinnedSource:
    if request.is_git:
        ref = request.git_ref or "HEAD"
        return PinnedSource(
            kind="git",
            location=request.context,
            ref=ref,
            revision=resolve_git_ref(request.context, ref),
        )
    directory = Path(request.context).resolve()
    return PinnedSource(kind="local", location=str(directory), revision=local_revision(directory))


def resolve_git_ref(url: str, ref: str) -> str:
    """Resolve a branch or tag to a commit with `git ls-remote`; a full SHA is kept as is."""
    if COMMIT_RE.match(ref):
        return ref
    output = run_git(["git", "ls-remote", "--", url, ref], what=f"listing refs of {url}")
    refs: dict[str, str] = {}
    for line in output.splitlines():
        sha, _, name = line.partition("\t")
        refs[name] = sha
    for name in (
        f"{ref}^{{}}",
        f"refs/tags/{ref}^{{}}",
        ref,
        f"refs/heads/{ref}",
        f"refs/tags/{ref}",
    ):
        if name in refs:
            return refs[name]
    raise ConfigurationError(
        f"git_ref {ref!r} was not found in {url}: give a branch, tag or full commit SHA"
    )


def local_revision(directory: Path) -> str | None:
    """The commit of a clean git work tree holding the context, else None (not pinnable)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if status.returncode != 0 or status.stdout.strip():
        return None
    return head.stdout.strip() or None


def run_git(argv: list[str], *, what: str, timeout_s: int = GIT_TIMEOUT_S) -> str:
    """Run git without prompts; failures become ConfigurationError or, when they look
    passing (network), TransientError, with git's last line in the message."""
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except FileNotFoundError as exc:
        raise ConfigurationError("git is not installed: install Debian package git") from exc
    except subprocess.TimeoutExpired as exc:
        raise TransientError(f"{what} timed out after {timeout_s}s") from exc
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1:] or ["no output"]
        message = f"{what} failed: {reason[0]}"
        if any(marker in done.stderr.lower() for marker in _TRANSIENT_GIT):
            raise TransientError(message)
        raise ConfigurationError(message)
    return done.stdout
