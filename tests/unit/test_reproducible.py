"""The epoch reaches buildah and the index: the plan's flags and the index's bytes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from multiarch.plan import PlanPaths, plan_build, reproducibility_flags
from multiarch.platforms import Platform
from multiarch.publish import CREATED_ANNOTATION, index_annotations, index_created
from multiarch.rebuild import inputs_digest
from multiarch.request import BuildRequest
from multiarch.source import PinnedSource

PATHS = PlanPaths(checkout="/s/checkout", storage_root="/s/storage",
                  storage_runroot="/s/runroot", layout="/shared/linux-amd64")


def request_for(context: Path, **fields: object) -> BuildRequest:
    (context / "Containerfile").write_text("FROM scratch\n")
    return BuildRequest.model_validate({"image": "127.0.0.1:5000/t/app:1",
                                        "platforms": ["linux/amd64"], "context": str(context),
                                        **fields})


def test_build_gets_timestamp_and_build_arg(tmp_path: Path) -> None:
    request = request_for(tmp_path, build_args={"V": "1"})
    source = PinnedSource(kind="local", location=str(tmp_path), epoch=1_700_000_000)
    build = plan_build(request, source, Platform.parse("linux/amd64"), PATHS, run_id="r").steps[0]
    argv = list(build.argv)
    start = argv.index("--build-arg")
    assert argv[start:start + 6] == [
        "--build-arg", "V=1",
        "--timestamp", "1700000000",
        "--build-arg", "SOURCE_DATE_EPOCH=1700000000",
    ]  # fmt: skip


def test_users_own_source_date_epoch_arg_wins(tmp_path: Path) -> None:
    request = request_for(tmp_path, build_args={"SOURCE_DATE_EPOCH": "7"})
    source = PinnedSource(kind="local", location=str(tmp_path), epoch=1_700_000_000)
    assert reproducibility_flags(request, source) == ["--timestamp", "1700000000"]


def test_no_epoch_no_flags(tmp_path: Path) -> None:
    request = request_for(tmp_path)
    assert reproducibility_flags(request, PinnedSource(kind="local", location="/x")) == []


def test_index_created_is_the_epoch() -> None:
    source = PinnedSource(kind="git", location="https://g.example/app.git", revision="a" * 40,
                          epoch=1_700_000_000)
    created = index_created(source)
    assert created == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert index_annotations(source, created=created)[CREATED_ANNOTATION] == \
        "2023-11-14T22:13:20Z"


def test_index_created_without_epoch_is_now() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    assert index_created(PinnedSource(kind="local", location="/x")) >= before


def test_a_given_epoch_is_an_input_of_the_rebuild_fingerprint(tmp_path: Path) -> None:
    """if-changed must rebuild when the user moves the epoch; the default one follows the
    source and adds nothing, so fingerprints published before stay valid."""
    source = PinnedSource(kind="local", location=str(tmp_path))
    default = inputs_digest(request_for(tmp_path), source, "FROM scratch\n")
    given = inputs_digest(request_for(tmp_path, source_date_epoch=1), source, "FROM scratch\n")
    moved = inputs_digest(request_for(tmp_path, source_date_epoch=2), source, "FROM scratch\n")
    assert len({default, given, moved}) == 3
