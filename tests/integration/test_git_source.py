"""A git context: the ref is pinned to one commit, and that commit is what gets built,
from any git server (a static web server too), and without its `.git`."""

from __future__ import annotations

import json
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from flows.build import build_multiarch_image
from multiarch.request import RunnerOptions
from tests.integration.conftest import read_image_file, skopeo_raw
from tests.integration.git_repos import DumbHttp, dumb_http

__all__ = ["dumb_http"]  # the fixture, imported for this module's tests

pytestmark = pytest.mark.integration

CONTAINERFILE = """\
ARG BASE
FROM ${BASE}
COPY message /message
RUN uname -m > /etc/build-arch
"""


def git(*args: str, cwd) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env={
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com",
            "PATH": "/usr/bin:/bin",
            "HOME": str(cwd),
        },
    ).stdout.strip()


def test_git_branch_is_pinned_and_built_with_its_revision(playground, prefect_server, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "--quiet", "--initial-branch=main", cwd=repo)
    (repo / "Containerfile").write_text(CONTAINERFILE)
    (repo / "message").write_text("from the release branch\n")
    git("add", ".", cwd=repo)
    git("commit", "--quiet", "-m", "release", cwd=repo)
    git("branch", "release", cwd=repo)
    release_commit = git("rev-parse", "release", cwd=repo)
    (repo / "message").write_text("from main, later\n")
    git("commit", "--quiet", "-am", "later", cwd=repo)

    image = f"{playground.address}/tests/fromgit"
    result = build_multiarch_image(
        image=f"{image}:release",
        platforms=["linux/amd64", "linux/arm64"],
        context=f"file://{repo}",
        git_ref="release",
        build_args={"BASE": playground.base},
        allow_emulation=True,
        insecure_registry=True,
        runner=RunnerOptions(work_dir=str(tmp_path / "work")),
    )

    index = json.loads(skopeo_raw(f"{image}:release"))
    assert index["annotations"]["org.opencontainers.image.revision"] == release_commit
    assert index["annotations"]["org.opencontainers.image.source"] == f"file://{repo}"
    for platform in result.platforms:
        scratch = tmp_path / platform.platform.slug
        scratch.mkdir()
        message = read_image_file(f"{image}@{platform.digest}", "/message", scratch=scratch)
        assert message == b"from the release branch\n"
        config = json.loads(
            subprocess.run(
                [
                    "skopeo",
                    "inspect",
                    "--config",
                    "--raw",
                    "--tls-verify=false",
                    f"docker://{image}@{platform.digest}",
                ],
                check=True,
                capture_output=True,
            ).stdout
        )
        labels = config["config"]["Labels"]
        assert labels["org.opencontainers.image.revision"] == release_commit


def test_unknown_git_ref_fails_before_any_build(playground, prefect_server, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "--quiet", "--initial-branch=main", cwd=repo)
    (repo / "Containerfile").write_text(CONTAINERFILE)
    git("add", ".", cwd=repo)
    git("commit", "--quiet", "-m", "one", cwd=repo)
    state = build_multiarch_image(
        image=f"{playground.address}/tests/nogit:latest",
        platforms=["linux/amd64"],
        context=f"file://{repo}",
        git_ref="no-such-branch",
        insecure_registry=True,
        runner=RunnerOptions(work_dir=str(tmp_path / "work")),
        return_state=True,
    )
    assert state.is_failed()
    assert "git_ref 'no-such-branch' was not found" in state.message
    assert not (tmp_path / "work" / "shared").exists()


def one_commit_repo(path: Path, containerfile: str, message: str) -> str:
    """A repository with one commit on main holding this Containerfile and `message`."""
    path.mkdir()
    git("init", "--quiet", "--initial-branch=main", cwd=path)
    (path / "Containerfile").write_text(containerfile)
    (path / "message").write_text(message)
    git("add", ".", cwd=path)
    git("commit", "--quiet", "-m", "one", cwd=path)
    return git("rev-parse", "HEAD", cwd=path)


def test_a_git_context_on_a_static_web_server_builds(playground, prefect_server, tmp_path,
                                                     dumb_http: DumbHttp):
    """Dumb HTTP (a bare repository behind http.server) can do no shallow and no filtered
    fetch: pinning, the commit's time, the Containerfile check and the checkout all work
    without them, in seconds (it used to fail after 6.5 minutes of timeouts)."""
    commit = one_commit_repo(tmp_path / "repo", CONTAINERFILE, "served as static files\n")
    url = dumb_http.publish(tmp_path / "repo", "app.git")
    image = f"{playground.address}/tests/fromdumbhttp"
    started = time.monotonic()
    result = build_multiarch_image(
        image=f"{image}:latest",
        platforms=["linux/amd64"],
        context=url,
        git_ref="main",
        build_args={"BASE": playground.base},
        insecure_registry=True,
        runner=RunnerOptions(work_dir=str(tmp_path / "work")),
    )
    assert time.monotonic() - started < 120
    assert any("/app.git/info/refs" in line for line in dumb_http.requests)
    annotations = json.loads(skopeo_raw(f"{image}:latest"))["annotations"]
    assert annotations["org.opencontainers.image.revision"] == commit
    assert annotations["org.opencontainers.image.source"] == url
    (platform,) = result.platforms
    message = read_image_file(f"{image}@{platform.digest}", "/message", scratch=tmp_path)
    assert message == b"served as static files\n"


COPY_ALL = """\
ARG BASE
FROM ${BASE}
COPY . /src
RUN test -f /src/message && test ! -e /src/.git
"""


def test_a_git_context_is_built_without_its_git_directory(playground, prefect_server,
                                                          tmp_path):
    """As BuildKit does: `COPY . /src` gets the commit's files, never the repository."""
    repo = tmp_path / "repo"
    commit = one_commit_repo(repo, COPY_ALL, "no history here\n")
    image = f"{playground.address}/tests/nodotgit"
    result = build_multiarch_image(
        image=f"{image}:latest",
        platforms=["linux/amd64"],
        context=f"file://{repo}",
        git_ref="main",
        build_args={"BASE": playground.base},
        insecure_registry=True,
        runner=RunnerOptions(work_dir=str(tmp_path / "work")),
    )
    (platform,) = result.platforms
    assert platform.digest
    annotations = json.loads(skopeo_raw(f"{image}:latest"))["annotations"]
    assert annotations["org.opencontainers.image.revision"] == commit  # pinning unchanged
    names = layer_paths(f"{image}@{platform.digest}", scratch=tmp_path / "pulled")
    assert {"src/Containerfile", "src/message"} <= names
    assert not {name for name in names if name == "src/.git" or name.startswith("src/.git/")}


def layer_paths(reference: str, *, scratch: Path) -> set[str]:
    """Every path in every layer of a pushed image (read back from an OCI layout)."""
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                    f"docker://{reference}", f"oci:{scratch}:pulled"],
                   check=True, capture_output=True, timeout=120)
    index = json.loads((scratch / "index.json").read_text())
    manifest = json.loads(blob(scratch, index["manifests"][0]["digest"]).read_text())
    names: set[str] = set()
    for layer in manifest["layers"]:
        with tarfile.open(blob(scratch, layer["digest"])) as tar:
            names |= {name.removeprefix("./").rstrip("/") for name in tar.getnames()}
    return names


def blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]
