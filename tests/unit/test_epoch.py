"""The source's epoch: a git commit's time, a local tree's newest file, or the user's value.

git is real here (local repositories in tmp_path, reached as file:// URLs): the point is
what git answers, not which arguments we pass it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from multiarch.credentials import ENV_CREDENTIALS
from multiarch.epoch import local_epoch, newest_file_time
from multiarch.errors import ConfigurationError, TransientError
from multiarch.request import BuildRequest
from multiarch.source import git_commit_time, pin_source

FIRST = 1_600_000_000  # 2020-09-13
SECOND = 1_700_000_000  # 2023-11-14


def git(repo: Path, *args: str, when: int | None = None) -> str:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(repo),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    if when is not None:
        env["GIT_COMMITTER_DATE"] = f"@{when} +0000"
        env["GIT_AUTHOR_DATE"] = f"@{when - 1000} +0000"  # committer time is what counts
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=env).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """Two commits: FIRST, then SECOND at the tip of main."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "--quiet", "--initial-branch=main")
    (path / "Containerfile").write_text("FROM scratch\n")
    git(path, "add", ".")
    git(path, "commit", "--quiet", "-m", "one", when=FIRST)
    (path / "Containerfile").write_text("FROM scratch\nLABEL v=2\n")
    git(path, "commit", "--quiet", "-am", "two", when=SECOND)
    return path


def touch(path: Path, when: int, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (when, when))
    return path


def test_newest_regular_file_wins(tmp_path: Path) -> None:
    touch(tmp_path / "Containerfile", FIRST)
    touch(tmp_path / "src" / "deep" / "main.c", SECOND)
    touch(tmp_path / "src" / "old.c", FIRST - 5)
    assert newest_file_time(tmp_path) == SECOND


def test_git_internals_directories_and_symlinks_do_not_count(tmp_path: Path) -> None:
    touch(tmp_path / "Containerfile", FIRST)
    touch(tmp_path / ".git" / "index", SECOND)  # git rewrites this on `git status`
    (tmp_path / "link").symlink_to("Containerfile")
    os.utime(tmp_path / "link", (SECOND, SECOND), follow_symlinks=False)
    (tmp_path / "empty").mkdir()
    os.utime(tmp_path / "empty", (SECOND, SECOND))
    assert newest_file_time(tmp_path) == FIRST


def test_fractions_are_dropped_and_empty_trees_use_their_own_time(tmp_path: Path) -> None:
    path = touch(tmp_path / "a", FIRST)
    os.utime(path, (FIRST + 0.9, FIRST + 0.9))
    assert newest_file_time(tmp_path) == FIRST
    empty = tmp_path / "nothing"
    empty.mkdir()
    os.utime(empty, (SECOND, SECOND))
    assert newest_file_time(empty) == SECOND


def test_clean_work_tree_uses_its_commit_time_dirty_one_its_files(repo: Path) -> None:
    revision = git(repo, "rev-parse", "HEAD")
    # as a fresh checkout would: same content, a new time
    touch(repo / "Containerfile", SECOND + 500, text="FROM scratch\nLABEL v=2\n")
    assert local_epoch(repo, revision=revision) == SECOND
    assert local_epoch(repo, revision=None) == SECOND + 500


def test_commit_time_of_a_git_url_without_a_checkout(repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD~1")
    assert git_commit_time(f"file://{repo}", git(repo, "rev-parse", "HEAD")) == SECOND
    assert git_commit_time(f"file://{repo}", first) == FIRST


def test_servers_that_refuse_a_sha_still_give_the_time(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Protocol v0 refuses a commit that no ref points at; the treeless fetch of every
    branch finds it."""
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "protocol.version")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "0")
    assert git_commit_time(f"file://{repo}", git(repo, "rev-parse", "HEAD~1")) == FIRST


def test_unknown_commit_is_a_configuration_error(repo: Path) -> None:
    with pytest.raises(ConfigurationError, match="reading the time of commit"):
        git_commit_time(f"file://{repo}", "0" * 40)


def test_credentials_never_reach_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_CREDENTIALS, "https://robot:s3cr3t-token@127.0.0.1:9")
    # Nothing listens on port 9: refused, which is passing (retried), like any network error.
    with pytest.raises(TransientError) as raised:
        git_commit_time("https://robot:s3cr3t-token@127.0.0.1:9/app.git", "1" * 40)
    assert "s3cr3t-token" not in str(raised.value)
    assert "https://127.0.0.1:9/app.git" in str(raised.value)


def request_for(context: str, **fields: object) -> BuildRequest:
    return BuildRequest.model_validate({"image": "127.0.0.1:5000/t/app:1",
                                        "platforms": ["linux/amd64"], "context": context,
                                        **fields})


def test_pin_source_carries_the_epoch(repo: Path, tmp_path: Path) -> None:
    assert pin_source(request_for(f"file://{repo}", git_ref="main")).epoch == SECOND
    local = tmp_path / "local"
    touch(local / "Containerfile", FIRST)
    assert pin_source(request_for(str(local))).epoch == FIRST


def test_a_given_epoch_wins_and_reads_nothing(tmp_path: Path) -> None:
    """No git call at all: the URL does not even exist."""
    request = request_for("file:///nonexistent/repo.git", git_ref="a" * 40,
                          source_date_epoch=42)
    assert pin_source(request).epoch == 42
