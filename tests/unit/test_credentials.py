"""Git credentials: split from URLs, redacted from text, handed to the real git by file."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from multiarch import credentials
from multiarch.credentials import (
    ENV_CREDENTIALS,
    ENV_CREDENTIALS_FILE,
    credential_lines,
    helper_config,
    move_to_environment,
    redact,
    secrets_of,
    split_credentials,
    temporary_store,
    write_store,
)
from multiarch.errors import ConfigurationError
from multiarch.plan import FETCH_SCRIPT, PlanPaths, plan_build
from multiarch.platforms import Platform
from multiarch.request import BuildRequest
from multiarch.source import PinnedSource, without_context_credentials

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("url", "clean", "line"),
    [
        ("https://user:tok3n@git.example.com/team/repo.git",
         "https://git.example.com/team/repo.git", "https://user:tok3n@git.example.com"),
        ("http://u:p%40ss@127.0.0.1:8080/r.git?x=1",
         "http://127.0.0.1:8080/r.git?x=1", "http://u:p%40ss@127.0.0.1:8080"),
        ("https://ghp_TOKEN@github.com/o/r.git",
         "https://github.com/o/r.git", "https://ghp_TOKEN:@github.com"),
        ("https://git.example.com/team/repo.git", "https://git.example.com/team/repo.git", None),
        ("ssh://git@git.example.com/team/repo.git", "ssh://git@git.example.com/team/repo.git",
         None),
        ("ssh://git:secret@git.example.com/r.git", "ssh://git@git.example.com/r.git", None),
        ("git@github.com:o/r.git", "git@github.com:o/r.git", None),
        ("file:///srv/repo", "file:///srv/repo", None),
    ],
)  # fmt: skip
def test_split_credentials(url, clean, line):
    assert split_credentials(url) == (clean, line)


def test_redact_removes_userinfo_of_every_url_and_known_secrets():
    text = (
        "fatal: unable to access 'https://bob:hunter22@git.example.com/r.git/': 403\n"
        "cloning http://tok3n-only@10.0.0.1:3000/x.git, then ssh://git:pw@h/r and "
        "ssh://git@h/r; the server echoed hunter22"
    )
    assert redact(text, secrets_of(["https://bob:hunter22@git.example.com"])) == (
        "fatal: unable to access 'https://git.example.com/r.git/': 403\n"
        "cloning http://10.0.0.1:3000/x.git, then ssh://git@h/r and "
        "ssh://git@h/r; the server echoed ***"
    )


def test_secrets_of_includes_the_decoded_form_and_skips_tiny_values():
    assert secrets_of(["https://u:p%40ssword@h", "https://u:ab@h"]) == ["p%40ssword", "p@ssword"]


def test_move_to_environment_strips_and_keeps_earlier_lines():
    environ = {ENV_CREDENTIALS: "https://a:old-token@other.example.com"}
    clean = move_to_environment("https://bob:new-token@git.example.com/r.git", environ)
    assert clean == "https://git.example.com/r.git"
    assert environ[ENV_CREDENTIALS].splitlines() == [
        "https://bob:new-token@git.example.com",
        "https://a:old-token@other.example.com",
    ]
    move_to_environment("https://bob:new-token@git.example.com/r.git", environ)
    assert len(environ[ENV_CREDENTIALS].splitlines()) == 2  # once only
    assert move_to_environment("https://git.example.com/r.git", environ) == (
        "https://git.example.com/r.git"
    )


def test_credential_lines_in_order_env_then_file(tmp_path):
    store = tmp_path / "store"
    store.write_text("# team tokens\n\nhttps://ci:file-token@git.example.com\n")
    environ = {ENV_CREDENTIALS: "https://me:env-token@git.example.com",
               ENV_CREDENTIALS_FILE: str(store)}
    assert credential_lines(None, environ) == [
        "https://me:env-token@git.example.com",
        "https://ci:file-token@git.example.com",
    ]


def test_a_malformed_line_is_refused_by_number_without_echoing_it(tmp_path):
    store = tmp_path / "store"
    store.write_text("https://ok:token@h.example.com\nghp_notaurl_SECRET\n")
    with pytest.raises(ConfigurationError) as caught:
        credential_lines(None, {ENV_CREDENTIALS_FILE: str(store)})
    assert "line 2" in str(caught.value)
    assert "SECRET" not in str(caught.value)


def test_missing_credentials_file_names_the_variable(tmp_path):
    with pytest.raises(ConfigurationError, match=ENV_CREDENTIALS_FILE):
        credential_lines(None, {ENV_CREDENTIALS_FILE: str(tmp_path / "nope")})


def test_store_is_created_owner_only(tmp_path):
    path = write_store(tmp_path / "s", ["https://u:t0ken@h"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "https://u:t0ken@h\n"


def test_temporary_store_is_gone_afterwards_and_absent_without_lines():
    with temporary_store([]) as none:
        assert none is None
    with temporary_store(["https://u:t0ken@h"]) as store:
        assert store is not None
        assert stat.S_IMODE(os.stat(store).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(Path(store).parent).st_mode) == 0o700
    assert not Path(store).exists()


def git_fill(config: tuple[str, ...], host: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """What the real git hands to a server for `host`, through our helper config."""
    return subprocess.run(
        ["git", *config, "credential", "fill"],
        input=f"protocol=https\nhost={host}\n\n",
        capture_output=True, text=True, check=False,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GIT_TERMINAL_PROMPT": "0"},
    )


def test_git_reads_the_store_for_its_host_only(tmp_path):
    odd = tmp_path / "dir with 'quotes' and $(spaces)"
    odd.mkdir()
    store = write_store(odd / "store", ["https://bob:s3cret-token@git.example.com"])
    config = helper_config(str(store))
    assert not any("s3cret" in arg for arg in config)
    filled = git_fill(config, "git.example.com", tmp_path)
    assert filled.returncode == 0, filled.stderr
    assert "username=bob" in filled.stdout
    assert "password=s3cret-token" in filled.stdout
    other = git_fill(config, "evil.example.com", tmp_path)
    assert "s3cret-token" not in other.stdout + other.stderr


def test_helper_config_replaces_the_machines_helpers(tmp_path):
    (tmp_path / ".gitconfig").write_text("[credential]\n\thelper = store\n")
    (tmp_path / ".git-credentials").write_text("https://worker:worker-token@git.example.com\n")
    store = write_store(tmp_path / "store", ["https://bob:run-token@git.example.com"])
    filled = git_fill(helper_config(str(store)), "git.example.com", tmp_path)
    assert "password=run-token" in filled.stdout
    assert "worker-token" not in filled.stdout


def request_for(context: str, **runner) -> BuildRequest:
    return BuildRequest(image="registry.example.com/team/hello:1.0",
                        platforms=("linux/amd64",), context=context, runner=runner)


PATHS = PlanPaths(checkout="/s/src", storage_root="/s/root", storage_runroot="/s/runroot",
                  layout="/shared/r/linux-amd64", git_credentials="/s/r.git-credentials")


def test_plan_fetch_reads_the_store_by_path_and_labels_the_clean_url():
    dirty = "https://bob:s3cret-token@git.example.com/team/hello.git"
    source = PinnedSource(kind="git", location=dirty, revision=SHA)
    plan = plan_build(request_for(dirty), source, Platform.parse("linux/amd64"), PATHS,
                      run_id="r")
    fetch = plan.steps[0]
    assert fetch.argv == (
        "sh", "-c", FETCH_SCRIPT, "fetch", "https://git.example.com/team/hello.git", "/s/src",
        SHA, "-c", "credential.helper=", "-c",
        "credential.helper=store --file=/s/r.git-credentials",
    )  # fmt: skip
    for step in plan.steps:
        assert "s3cret" not in " ".join([*step.argv, *step.env.values()])
    build = plan.steps[1].argv
    assert build[build.index("--label") + 1] == (
        "org.opencontainers.image.source=https://git.example.com/team/hello.git"
    )


def test_fetch_script_clones_and_checks_out_with_real_git(tmp_path):
    repo = tmp_path / "repo"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}
    run = {"check": True, "capture_output": True, "text": True, "env": env}
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], **run)
    (repo / "Containerfile").write_text("FROM scratch\n")
    subprocess.run(["git", "-C", str(repo), "add", "."], **run)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "one"], **run)
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], **run).stdout.strip()
    subprocess.run(["git", "-C", str(repo), "config", "uploadpack.allowFilter", "true"], **run)
    source = PinnedSource(kind="git", location=f"file://{repo}", revision=sha)
    store = write_store(tmp_path / "store", ["https://u:t0ken@git.example.com"])
    fetch = credentials_plan_fetch(source, tmp_path / "src", store)
    subprocess.run(list(fetch.argv), **run)
    assert (tmp_path / "src" / "Containerfile").read_text() == "FROM scratch\n"
    assert not (tmp_path / "src" / ".git").exists()  # the context holds no repository
    head = subprocess.run(["git", "--git-dir", str(tmp_path / "src.git"), "rev-parse", "HEAD"],
                          **run)
    assert head.stdout.strip() == sha
    assert "t0ken" not in (tmp_path / "src.git" / "config").read_text()


def credentials_plan_fetch(source: PinnedSource, checkout: Path, store: Path):
    from multiarch.plan import fetch_steps

    (step,) = fetch_steps(source, checkout=str(checkout), credentials=str(store))
    return step


def test_flow_strips_a_context_with_credentials_and_warns(monkeypatch):
    monkeypatch.delenv(ENV_CREDENTIALS, raising=False)
    warnings: list[str] = []
    dirty = request_for("https://bob:s3cret-token@git.example.com/team/hello.git")
    clean = without_context_credentials(dirty, warn=warnings.append)
    assert clean.context == "https://git.example.com/team/hello.git"
    assert os.environ[ENV_CREDENTIALS] == "https://bob:s3cret-token@git.example.com"
    (warning,) = warnings
    assert "s3cret" not in warning
    assert "already stored" in warning and "Secret block" in warning
    plain = request_for("https://git.example.com/team/hello.git")
    assert without_context_credentials(plain, warn=warnings.append) is plain
    assert len(warnings) == 1


def test_secret_block_name_is_a_runner_option_and_only_a_name():
    request = request_for("https://git.example.com/r.git", git_credentials_block="git-ci")
    assert request.runner.git_credentials_block == "git-ci"
    assert credentials.ENV_CREDENTIALS not in request.model_dump_json()
