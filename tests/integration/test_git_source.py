"""A git context: the ref is pinned to one commit, and that commit is what gets built."""

from __future__ import annotations

import json
import subprocess

import pytest

from flows.build import build_multiarch_image
from multiarch.request import RunnerOptions
from tests.integration.conftest import read_image_file, skopeo_raw

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
