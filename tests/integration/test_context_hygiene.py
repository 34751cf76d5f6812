"""Context hygiene through `multiarch build`, and against the real buildah and git.

Refusals happen in the CLI's own preflight (a local context) or right after the source is
pinned (a git context), so they cost no build. The warning test builds `FROM scratch`
with one COPY, one platform, no SBOM or provenance: a few seconds.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from multiarch import context_hygiene as hygiene
from multiarch.copy_sources import copy_sources
from multiarch.errors import ConfigurationError
from multiarch.ignore_rules import find_ignore_rules
from multiarch.preflight import check_context
from multiarch.rebuild import fingerprint
from multiarch.request import BuildRequest
from multiarch.source import pin_source
from tests.integration.conftest import read_image_file, tag_digest
from tests.integration.git_repos import git
from tests.integration.test_cli import multiarch

pytestmark = pytest.mark.integration

TOKEN = "ghp_Zq8vTESTTOKENnotrealAbCdEf0123456789"
COPY_ALL = "FROM scratch\nCOPY . /src\n"


def build_args(image: str, context: Path, work: Path, *extra: str) -> list[str]:
    return ["build", "--image", image, "--platform", "linux/amd64", "--context", str(context),
            "--insecure-registry", "--no-sbom", "--no-provenance", "--work-dir", str(work),
            *extra]


def reasons(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("multiarch: ")]


@pytest.fixture
def context(tmp_path: Path) -> Path:
    directory = tmp_path / "ctx"
    directory.mkdir()
    (directory / "Containerfile").write_text(COPY_ALL)
    (directory / "main.py").write_text("print('hello')\n")
    return directory


def test_a_credentialed_git_config_is_refused_before_anything_runs(playground, context,
                                                                   tmp_path):
    (context / ".git").mkdir()
    (context / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (context / ".git" / "config").write_text(
        f'[remote "origin"]\n\turl = https://alice:{TOKEN}@git.example.com/o/r.git\n')
    work = tmp_path / "work"
    image = f"{playground.address}/tests/hygiene-refused:1"

    done = multiarch(*build_args(image, context, work))

    assert done.returncode == 1, done.stderr[-3000:]
    assert reasons(done.stderr) == [
        "multiarch: context: .git/config holds a credential in a URL (not shown) and the "
        "Containerfile's COPY/ADD would copy it into the image: add .git to "
        f"{context}/.containerignore, or pass --allow-secret-files (allow_secret_files: true) "
        "to build anyway"]
    assert TOKEN not in done.stdout + done.stderr
    assert "alice:" not in done.stdout + done.stderr
    assert done.stdout == ""
    assert not work.exists(), "the run created its work directory: something started"
    assert tag_digest(image) is None


def test_a_containerfile_linked_out_of_the_context_is_refused(playground, context, tmp_path):
    host = tmp_path / "host" / "Containerfile"
    host.parent.mkdir()
    host.write_text("FROM scratch\n")
    (context / "build").mkdir()
    (context / "build" / "Containerfile").symlink_to(host)
    work = tmp_path / "work"

    done = multiarch(*build_args(f"{playground.address}/tests/hygiene-link:1", context, work,
                                 "--file", "build/Containerfile"))

    assert done.returncode == 1, done.stderr[-3000:]
    assert reasons(done.stderr) == [
        "multiarch: containerfile: build/Containerfile resolves through a symlink outside the "
        f"context {context} (it points to {host}), so buildah would read that file from the "
        "machine that builds: replace the link by the file itself, or point it at a file "
        "inside the context"]
    assert not work.exists()


def test_a_committed_env_is_warned_about_and_built(playground, prefect_server, context,
                                                   tmp_path):
    (context / ".env").write_text("API_TOKEN=not-a-real-one\n")
    image = f"{playground.address}/tests/hygiene-warned"

    done = multiarch(*build_args(f"{image}:1", context, tmp_path / "work", "--json"),
                     api_url=prefect_server)

    assert done.returncode == 0, done.stderr[-3000:]
    warning = ("context: WARNING: the Containerfile's COPY/ADD would copy 1 path that looks "
               "secret into the image: .env (no .containerignore or .dockerignore excludes "
               f"it): list it in {context}/.containerignore, or remove it from the context")
    output = done.stdout + done.stderr
    assert output.count(warning) == 1, output[-3000:]
    # a warning, not a refusal: the file is in the image, as the warning said
    assert read_image_file(f"{image}:1", "/src/.env", scratch=tmp_path) == \
        b"API_TOKEN=not-a-real-one\n"


def commit_all(repo: Path) -> None:
    git("add", "-A", cwd=repo)
    git("commit", "--quiet", "-m", "c", cwd=repo)


def git_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "--quiet", "--initial-branch=main", cwd=repo)
    return repo


def git_request(repo: Path, **fields: object) -> BuildRequest:
    return BuildRequest.model_validate({"image": "127.0.0.1:5000/tests/never:1",
                                        "platforms": ["linux/amd64"],
                                        "context": f"file://{repo}", **fields})


def test_a_git_containerfile_linked_to_a_host_path_is_refused(playground, prefect_server,
                                                              tmp_path):
    """Refused right after pinning, in the flow, before the rebuild check or any build."""
    repo = git_repo(tmp_path)
    (repo / "Containerfile").symlink_to("/etc/hostname")
    commit_all(repo)
    work = tmp_path / "work"
    image = f"{playground.address}/tests/hygiene-git:1"

    done = multiarch("build", "--image", image, "--platform", "linux/amd64", "--context",
                     f"file://{repo}", "--work-dir", str(work), "--insecure-registry",
                     api_url=prefect_server)

    assert done.returncode == 1, done.stderr[-3000:]
    assert reasons(done.stderr) == [
        "multiarch: containerfile: Containerfile resolves through a symlink outside the "
        f"checkout of file://{repo} (Containerfile -> /etc/hostname), so buildah would read "
        "that file from the machine that builds: replace the link by the file itself, or "
        "point it at a file inside the context"], done.stderr[-3000:]
    assert not work.exists(), "a run claimed its work directory: something started"
    assert tag_digest(image) is None


def test_git_links_at_any_level_and_the_digest_of_what_buildah_reads(tmp_path):
    repo = git_repo(tmp_path)
    (repo / "deploy").mkdir()
    real = b"FROM scratch\r\nCOPY app /app\r\n"
    (repo / "deploy" / "Containerfile.real").write_bytes(real)
    (repo / "build").symlink_to("deploy")
    (repo / "Containerfile").symlink_to("build/Containerfile.real")
    (repo / "up").symlink_to("..")
    (repo / "app").mkdir()
    (repo / "app" / "id_rsa").write_text("not a key\n")
    (repo / ".env").write_text("not copied: COPY app only\n")
    commit_all(repo)

    request = git_request(repo)
    source = pin_source(request)
    assert check_context(request, source) == [
        "context: WARNING: the Containerfile's COPY/ADD would copy 1 path that looks secret "
        "into the image: app/id_rsa (no .containerignore or .dockerignore excludes it): list "
        "it in .containerignore in the repository, or remove it from the context"]
    # the provenance's digest: the resolved file's bytes, not the link text
    assert fingerprint(request, source).containerfile_digest == \
        "sha256:" + hashlib.sha256(real).hexdigest()

    escaping = git_request(repo, containerfile="up/outside/Containerfile")
    with pytest.raises(ConfigurationError, match=r"\(up -> \.\.\)"):
        check_context(escaping, pin_source(escaping))


def test_a_git_context_is_not_warned_about_a_git_directory_it_does_not_ship(tmp_path):
    """The checkout has no `.git` (multiarch.source.FETCH_SCRIPT); a committed `.env` is
    named unless ignored."""
    repo = git_repo(tmp_path)
    (repo / "Containerfile").write_text(COPY_ALL)
    commit_all(repo)
    request = git_request(repo)
    assert check_context(request, pin_source(request)) == []
    (repo / ".env").write_text("TOKEN=x\n")
    commit_all(repo)
    (line,) = check_context(request, pin_source(request))
    assert "into the image: .env (" in line and ".git/" not in line
    (repo / ".dockerignore").write_text(".env\n")
    commit_all(repo)
    assert check_context(request, pin_source(request)) == []


def test_predictions_match_what_buildah_copies(tmp_path):
    """The ignore semantics against buildah 1.28 itself: every file of a context, predicted
    sent or not, compared with what `COPY . /src` put into the image."""
    context = tmp_path / "ctx"
    for path in [".env", "app/.env", "certs/ca.pem", "certs/key.pem", "sub/.git/config",
                 ".git/config", ".git/HEAD", "top.pem", "d/x.key", "# .env", "id_rsa",
                 "deep/a/b/.npmrc", "keep/.env.local"]:
        (context / path).parent.mkdir(parents=True, exist_ok=True)
        (context / path).write_text("x\n")
    (context / "Containerfile").write_text(COPY_ALL)
    (context / ".containerignore").write_text(
        "# comment\n.git\n**/.env\n!app/.env\ncerts\n!certs/ca.pem\n*.pem\n /d/ \n # .env\n"
        "deep/**/.npmrc\nkeep\n!keep/.env.local\n")
    out = tmp_path / "out"
    storage = ["--root", str(tmp_path / "root"), "--runroot", str(tmp_path / "run"),
               "--storage-driver", "vfs"]
    subprocess.run(["buildah", *storage, "bud", "--quiet", "--isolation", "chroot",
                    "--output", f"type=local,dest={out}", str(context)],
                   check=True, capture_output=True, timeout=300)
    copied = sorted(p.relative_to(out / "src").as_posix()
                    for p in (out / "src").rglob("*") if p.is_file())

    rules = find_ignore_rules(
        "Containerfile", lambda p: (context / p).read_bytes() if (context / p).is_file()
        else None)
    every = sorted(p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file())
    sources = copy_sources(COPY_ALL, {})
    assert [p for p in every if hygiene.sent(p, sources, rules)] == copied
    assert "certs/ca.pem" in copied and "app/.env" in copied and ".env" not in copied
