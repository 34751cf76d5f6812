"""Reproducible digests: the same source built twice publishes the same bytes.

Each build is a separate run (its own work directory, build store and tag), for
linux/amd64 and linux/arm64 (emulated), so nothing is shared between the two but the
source, the inputs and the base image.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from flows.build import build_multiarch_image
from multiarch.orchestrate import build_and_publish
from multiarch.request import BuildRequest, RunnerOptions
from multiarch.results import BuildResult
from tests.integration.conftest import skopeo_raw, tag_digest

pytestmark = pytest.mark.integration

CONTAINERFILE = """\
ARG BASE
FROM ${BASE}
COPY message /message
RUN uname -m > /etc/build-arch && mkdir -p /var/app && cp /message /var/app/
"""
COMMIT_TIME = 1_650_000_000  # 2022-04-15T05:20:00Z
EPOCH = 1_600_000_000


class _Quiet:
    def info(self, msg: str, /) -> None:
        pass


def make_context(path: Path, message: str = "hello\n") -> Path:
    path.mkdir()
    (path / "Containerfile").write_text(CONTAINERFILE)
    (path / "message").write_text(message)
    return path


def build(playground, tmp_path: Path, context: str, *, name: str, **fields: Any) -> BuildResult:
    """One run: a fresh work directory and a tag of its own."""
    request = BuildRequest(
        image=f"{playground.address}/tests/repro:{name}",
        platforms=("linux/amd64", "linux/arm64"),
        context=context,
        build_args={"BASE": playground.base},
        allow_emulation=True,
        insecure_registry=True,
        runner=RunnerOptions(work_dir=str(tmp_path / f"work-{name}")),
        **fields,
    )
    return build_and_publish(request, log=_Quiet())


def digests(result: BuildResult) -> tuple[str, list[str]]:
    return result.index_digest, [p.digest for p in result.platforms]


def image_config(reference: str) -> dict[str, Any]:
    return json.loads(subprocess.run(
        ["skopeo", "inspect", "--config", "--raw", "--tls-verify=false", f"docker://{reference}"],
        check=True, capture_output=True, timeout=60,
    ).stdout)


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_local_context_builds_to_the_same_digests(playground, tmp_path):
    context = make_context(tmp_path / "app")
    os.utime(context / "message", (EPOCH + 77, EPOCH + 77))
    os.utime(context / "Containerfile", (EPOCH, EPOCH))
    first = build(playground, tmp_path, str(context), name="local-1")
    second = build(playground, tmp_path, str(context), name="local-2")
    assert digests(second) == digests(first)
    assert len(set(digests(first)[1])) == 2
    repo = f"{playground.address}/tests/repro"
    for platform in first.platforms:  # the newest file's time, not the clock's
        assert image_config(f"{repo}@{platform.digest}")["created"] == iso(EPOCH + 77)

    pinned = build(playground, tmp_path, str(context), name="pinned-1", source_date_epoch=EPOCH)
    os.utime(context / "message", None)  # touched: a new time, the same bytes
    touched = build(playground, tmp_path, str(context), name="pinned-2", source_date_epoch=EPOCH)
    assert digests(touched) == digests(pinned)
    assert json.loads(skopeo_raw(f"{repo}:pinned-2"))["annotations"][
        "org.opencontainers.image.created"] == iso(EPOCH)

    (context / "message").write_text("changed\n")
    changed = build(playground, tmp_path, str(context), name="pinned-3", source_date_epoch=EPOCH)
    assert changed.index_digest != pinned.index_digest
    assert all(a != b for a, b in zip(digests(changed)[1], digests(pinned)[1], strict=True))


def git(repo: Path, *args: str) -> str:
    env = {"PATH": os.environ["PATH"], "HOME": str(repo),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
           "GIT_AUTHOR_DATE": f"@{COMMIT_TIME - 3600} +0000",
           "GIT_COMMITTER_DATE": f"@{COMMIT_TIME} +0200"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=env).stdout.strip()


def test_git_context_builds_to_the_same_digests_dated_by_its_commit(playground, tmp_path):
    repo = make_context(tmp_path / "repo")
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", ".")
    git(repo, "commit", "--quiet", "-m", "release")
    url = f"file://{repo}"
    first = build(playground, tmp_path, url, name="git-1", git_ref="main")
    second = build(playground, tmp_path, url, name="git-2", git_ref="main")
    assert digests(second) == digests(first)
    image = f"{playground.address}/tests/repro"
    for platform in first.platforms:
        config = image_config(f"{image}@{platform.digest}")
        assert config["created"] == iso(COMMIT_TIME)
        assert {h["created"] for h in config["history"][-2:]} == {iso(COMMIT_TIME)}
    index = json.loads(skopeo_raw(f"{image}:git-1"))
    assert index["annotations"]["org.opencontainers.image.created"] == iso(COMMIT_TIME)


def test_forced_rebuild_publishes_the_digest_if_changed_keeps(playground, prefect_server,
                                                             tmp_path):
    """A forced rebuild of unchanged inputs gives the very index `if-changed` would have
    kept: the tag does not even get rewritten."""
    context = make_context(tmp_path / "app")
    image = f"{playground.address}/tests/repro-rebuild:stable"

    def run(rebuild: str) -> BuildResult:
        return build_multiarch_image(
            image=image, platforms=["linux/amd64", "linux/arm64"], context=str(context),
            build_args={"BASE": playground.base}, allow_emulation=True, insecure_registry=True,
            rebuild=rebuild, runner=RunnerOptions(work_dir=str(tmp_path / f"w-{rebuild}")),
        )

    first = run("if-changed")
    assert not first.up_to_date
    link = tag_link(playground, "tests/repro-rebuild", "stable")
    written = link.stat().st_mtime_ns
    forced = run("always")
    assert not forced.up_to_date
    assert digests(forced) == digests(first)
    assert tag_digest(image) == first.index_digest
    assert link.stat().st_mtime_ns == written  # no tag PUT: it already held these bytes
    kept = run("if-changed")
    assert kept.up_to_date and kept.index_digest == first.index_digest


def tag_link(playground, repository: str, tag: str) -> Path:
    """Where distribution 2.8 records what a tag points at; rewritten by every tag PUT."""
    return (playground.registry.data_dir / "docker" / "registry" / "v2" / "repositories" /
            repository / "_manifests" / "tags" / tag / "current" / "link")
