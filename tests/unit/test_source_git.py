"""Git sources from any server, on a deadline: dumb HTTP, a hung server, the checkout.

git is real here: repositories in tmp_path, reached over file:// and over plain static
HTTP from Python's http.server (tests/integration/git_repos.py), the kind of server that
can do neither shallow nor filtered fetches. What counts is what git answers and what is
left on disk and in the process table, not which arguments we pass.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from multiarch import source
from multiarch.credentials import ENV_CREDENTIALS, write_store
from multiarch.errors import PermanentError, TransientError
from multiarch.plan import fetch_steps
from multiarch.request import BuildRequest
from multiarch.source import (
    FETCH_SCRIPT,
    KILL_GRACE_S,
    PinnedSource,
    git_commit_time,
    pin_source,
    run_git,
)
from tasks.retry import only_transient
from tests.integration.git_repos import DumbHttp, dumb_http, silent_server
from tests.unit.test_epoch import FIRST, SECOND, git, repo

__all__ = ["dumb_http", "repo"]  # the fixtures, imported for this module's tests


@pytest.fixture
def fetches(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The arguments of every `git fetch` source.run_git runs, as git gets them."""
    seen: list[list[str]] = []
    real = source.run_git

    def spy(argv: list[str], **kwargs: object) -> str:
        if "fetch" in argv:
            seen.append(argv[argv.index("fetch") + 1:])
        return real(argv, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(source, "run_git", spy)
    return seen


def request_for(context: str, **fields: object) -> BuildRequest:
    return BuildRequest.model_validate({"image": "127.0.0.1:5000/t/app:1",
                                        "platforms": ["linux/amd64"], "context": context,
                                        **fields})


def test_dumb_http_gives_the_commit_time_without_a_filtered_fetch(
        repo: Path, dumb_http: DumbHttp, fetches: list[list[str]]) -> None:
    url = dumb_http.publish(repo, "app.git")
    started = time.monotonic()
    assert git_commit_time(url, git(repo, "rev-parse", "HEAD")) == SECOND
    assert git_commit_time(url, git(repo, "rev-parse", "HEAD~1")) == FIRST
    assert time.monotonic() - started < 10
    assert any("/app.git/info/refs" in line for line in dumb_http.requests)  # really HTTP
    # git refused depth 1 as a dumb server's answer; the fallback asked for no filter
    assert [args[:2] for args in fetches] == [["--quiet", "--depth=1"], ["--quiet", "--"]] * 2


def test_smart_servers_still_send_one_commit(repo: Path, fetches: list[list[str]]) -> None:
    assert git_commit_time(f"file://{repo}", git(repo, "rev-parse", "HEAD")) == SECOND
    assert [args[:3] for args in fetches] == [["--quiet", "--depth=1", "--filter=tree:0"]]


def test_pin_source_over_dumb_http(repo: Path, dumb_http: DumbHttp) -> None:
    url = dumb_http.publish(repo, "app.git")
    pinned = pin_source(request_for(url, git_ref="main"))
    assert (pinned.location, pinned.revision, pinned.epoch) == (
        url, git(repo, "rev-parse", "HEAD"), SECOND)


def test_a_git_timeout_is_permanent_and_says_url_step_and_time() -> None:
    with silent_server() as port:
        url = f"git://127.0.0.1:{port}/app.git"
        started = time.monotonic()
        with pytest.raises(PermanentError) as raised:
            run_git(["git", "ls-remote", "--", url, "main"], what=f"listing refs of {url}",
                    timeout_s=2)
        elapsed = time.monotonic() - started
    assert elapsed < 2 + KILL_GRACE_S
    assert not isinstance(raised.value, TransientError)
    assert f"listing refs of {url}: git ls-remote of {url} did not finish within 2 s" in str(
        raised.value)

    class Failed:
        def result(self) -> None:
            raise raised.value

    assert only_transient(None, None, Failed()) is False  # the Prefect tasks do not retry it


def test_a_silent_http_server_is_given_up_on_once_at_the_stall_limit(
        monkeypatch: pytest.MonkeyPatch, fetches: list[list[str]]) -> None:
    """curl's stall limit (30 s in production, 1 s here) ends the fetch; no fallback fetch
    follows it, and nothing retries it."""
    monkeypatch.setattr(source, "GIT_STALL_S", 1)
    monkeypatch.setattr(source, "STALL_CONFIG",
                        ("-c", "http.lowSpeedLimit=1", "-c", "http.lowSpeedTime=1"))
    with silent_server() as port:
        url = f"http://127.0.0.1:{port}/app.git"
        started = time.monotonic()
        with pytest.raises(PermanentError) as raised:
            git_commit_time(url, "a" * 40)
        elapsed = time.monotonic() - started
    assert elapsed < 5
    assert not isinstance(raised.value, TransientError)
    assert f"git fetch of {url} received nothing for 1 s" in str(raised.value)
    assert len(fetches) == 1


def test_a_timeout_message_carries_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_CREDENTIALS, "http://robot:s3cr3t-token@127.0.0.1")
    with silent_server() as port, pytest.raises(PermanentError) as raised:
        run_git(["git", "ls-remote", "--", f"git://robot:s3cr3t-token@127.0.0.1:{port}/a"],
                what="listing refs", timeout_s=1, secrets=["s3cr3t-token"])
    assert "s3cr3t-token" not in str(raised.value)


def test_a_timeout_ends_everything_git_started() -> None:
    """git's children (here a shell alias and what it sent to the background) die with it:
    a deadline on git alone left a dumb server's lazy fetches multiplying."""
    marker = "86.420135"  # a sleep nobody else runs
    with pytest.raises(PermanentError):
        run_git(["git", "-c", f"alias.hang=!sleep {marker} & sleep {marker}; :", "hang"],
                what="hanging on purpose", timeout_s=1)
    time.sleep(0.5)
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and marker in _cmdline(pid)]


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def checkout_with(url: str, checkout: Path, revision: str, store: Path) -> None:
    """Run the checkout script with exactly the argv multiarch.plan.fetch_steps builds."""
    pinned = PinnedSource(kind="git", location=url, revision=revision)
    (step,) = fetch_steps(pinned, checkout=str(checkout), credentials=str(store))
    argv = [*step.argv[:2], FETCH_SCRIPT, *step.argv[3:]]
    assert argv[3:7] == ["fetch", url, str(checkout), revision]
    subprocess.run(argv, check=True, capture_output=True, timeout=60,
                   env={"PATH": os.environ["PATH"], "HOME": str(checkout.parent), **step.env})


@pytest.mark.parametrize("server", ["file", "dumb-http"])
def test_the_checkout_has_the_commit_and_no_git_dir(
        server: str, repo: Path, dumb_http: DumbHttp, tmp_path: Path) -> None:
    url = f"file://{repo}" if server == "file" else dumb_http.publish(repo, "app.git")
    first = git(repo, "rev-parse", "HEAD~1")
    store = write_store(tmp_path / "store", ["https://u:t0ken@git.example.com"])
    checkout = tmp_path / "src"
    checkout_with(url, checkout, first, store)
    assert sorted(p.name for p in checkout.iterdir()) == ["Containerfile"]  # no .git at all
    assert git(tmp_path, "--git-dir", f"{checkout}.git", "rev-parse", "HEAD") == first
    assert "t0ken" not in Path(f"{checkout}.git", "config").read_text()
