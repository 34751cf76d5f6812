"""Preflight checks that need no registry: directories and the target stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from multiarch import preflight
from multiarch.errors import ConfigurationError
from multiarch.request import BuildRequest
from multiarch.source import PinnedSource

MULTI_STAGE = """\
ARG BASE=busybox
FROM ${BASE} AS builder
RUN true
FROM builder AS Runtime
"""


GIT = "https://git.example.com/a.git"


def request_for(context: Path | str, **overrides: Any) -> BuildRequest:
    fields: dict[str, Any] = {"image": "127.0.0.1:5000/team/app:1", "platforms": ["linux/amd64"],
                              "context": str(context)}
    fields.update(overrides)
    return BuildRequest.model_validate(fields)


@pytest.fixture
def context(tmp_path: Path) -> Path:
    directory = tmp_path / "ctx"
    directory.mkdir()
    (directory / "Containerfile").write_text(MULTI_STAGE)
    return directory


@pytest.mark.parametrize("target", ["builder", "runtime", "RUNTIME"])
def test_an_existing_stage_passes(context: Path, target: str) -> None:
    notes = preflight.check_target(request_for(context, target=target), None)
    assert notes == [f"target: stage {target} found"]


def test_a_missing_stage_names_the_stages_there(context: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        preflight.check_target(request_for(context, target="nosuchstage"), None)
    assert str(info.value) == (
        "target: stage 'nosuchstage' is not in the Containerfile (its stages: builder, Runtime, "
        "as in FROM ... AS NAME): name one of them, or drop --target to build the last stage"
    )


def test_a_containerfile_without_stage_names(tmp_path: Path) -> None:
    (tmp_path / "Containerfile").write_text("FROM busybox\n")
    with pytest.raises(ConfigurationError, match="it names no stage"):
        preflight.check_target(request_for(tmp_path, target="x"), None)


def test_the_named_containerfile_is_read(context: Path) -> None:
    (context / "Other.containerfile").write_text("FROM busybox AS other\n")
    request = request_for(context, containerfile="Other.containerfile", target="other")
    assert preflight.check_target(request, None) == ["target: stage other found"]


def test_git_target_waits_for_the_pinned_source() -> None:
    request = request_for(GIT, target="x")
    assert preflight.check_target(request, None) == [
        "target: checked once the git source is pinned"
    ]


def test_a_pinned_local_source_is_read(context: Path) -> None:
    source = PinnedSource(kind="local", location=str(context))
    with pytest.raises(ConfigurationError):
        preflight.check_target(request_for(context, target="nope"), source)


def test_no_target_no_check(context: Path) -> None:
    assert preflight.check_target(request_for(context), None) == []


def test_a_writable_directory_is_probed_and_left_as_it_was(tmp_path: Path) -> None:
    work = tmp_path / "new" / "work"
    note = preflight.check_directory("work_dir", work)
    assert note.startswith(f"work_dir: {work} is writable, ")
    assert list(tmp_path.iterdir()) == [], "preflight left a directory behind"
    work.mkdir(parents=True)
    preflight.check_directory("work_dir", work)
    assert list(work.iterdir()) == []


def test_a_directory_below_a_file_is_not_writable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigurationError) as info:
        preflight.check_directory("shared_dir", tmp_path / "file" / "shared")
    assert str(info.value) == (
        f"shared_dir: {tmp_path}/file/shared is not writable (Not a directory): choose a "
        "directory this user can create and write, e.g. --shared-dir /var/tmp/multiarch/shared"
    )


def test_too_little_free_space_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"GiB free, less than the \d+ GiB a build"):
        preflight.check_directory("work_dir", tmp_path, min_free=1 << 62)  # > any disk here


def test_a_colon_from_the_environment_is_refused(tmp_path: Path) -> None:
    """MULTIARCH_WORK_DIR bypasses the model's validation; preflight still catches it."""
    with pytest.raises(ConfigurationError, match=r"^work_dir: .* contains ':'"):
        preflight.check_directory("work_dir", tmp_path / "a:b")
    assert not (tmp_path / "a:b").exists()


def test_kubernetes_runner_checks_only_the_work_dir(tmp_path: Path) -> None:
    request = request_for(GIT, runner={"kind": "kubernetes", "work_dir": str(tmp_path / "w")})
    notes = preflight.check_directories(request)
    assert [note.split(":", 1)[0] for note in notes] == ["work_dir"]


def test_builds_preflighting_the_same_new_directory_at_once_all_pass(tmp_path):
    """A fleet preflights several builds in one process at the same moment: one check
    removing the directory it created must not fail another's probe."""
    from concurrent.futures import ThreadPoolExecutor

    from multiarch.preflight import check_directory

    for attempt in range(30):
        work = tmp_path / f"round-{attempt}" / "work"
        with ThreadPoolExecutor(max_workers=4) as pool:
            notes = list(pool.map(lambda path: check_directory("work_dir", path, min_free=0),
                                  [work] * 4))
        assert all(note.startswith(f"work_dir: {work} is writable") for note in notes)
        assert not work.parent.exists()  # each check still removes what it created
