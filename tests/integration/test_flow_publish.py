"""The flow end to end: two platforms, a RUN step each, one verified multi-arch tag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.build import build_multiarch_image
from multiarch.ocispec import MEDIA_TYPE_INDEX
from multiarch.request import RunnerOptions
from tests.integration.conftest import EXAMPLE_HELLO, read_image_file, skopeo_raw, tag_digest
from tests.integration.prefect_queries import (
    artifact_data,
    artifact_types,
    task_run_windows,
    task_runs,
)

pytestmark = pytest.mark.integration

# Everything a shell would interpret: command substitution, quotes, separators, newline.
TRICKY_GREETING = "hi $(id -u); echo \"pwned\" `uname` 'q' && x || y\nsecond line $HOME"


@pytest.fixture(scope="module")
def published(playground, prefect_server, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    state = build_multiarch_image(
        image=f"{playground.address}/tests/hello:latest",
        tags=["v1"],
        platforms=["linux/amd64", "linux/arm64"],
        context=str(EXAMPLE_HELLO),
        build_args={"BASE": playground.base, "GREETING": TRICKY_GREETING},
        allow_emulation=True,
        insecure_registry=True,
        runner=RunnerOptions(work_dir=str(work)),
        return_state=True,
    )
    assert state.is_completed(), state.message
    return state.result(), state.state_details.flow_run_id, work


def test_tag_is_an_oci_index_with_amd64_and_arm64_v8(published, playground):
    raw = skopeo_raw(f"{playground.address}/tests/hello:latest")
    index = json.loads(raw)
    assert index["mediaType"] == MEDIA_TYPE_INDEX
    platforms = [m["platform"] for m in index["manifests"]]
    assert platforms == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
    ]


def test_result_digests_match_the_registry(published, playground):
    result, _, _ = published
    reference = f"{playground.address}/tests/hello"
    assert tag_digest(f"{reference}:latest") == result.index_digest
    assert tag_digest(f"{reference}:v1") == result.index_digest
    index = json.loads(skopeo_raw(f"{reference}:latest"))
    assert [m["digest"] for m in index["manifests"]] == [p.digest for p in result.platforms]
    for platform in result.platforms:
        assert tag_digest(f"{reference}@{platform.digest}") == platform.digest
    assert result.tags == ["latest", "v1"]


def test_each_platform_ran_its_run_step_on_its_architecture(published, playground, tmp_path):
    result, _, _ = published
    machines = {}
    for platform in result.platforms:
        scratch = tmp_path / platform.platform.slug
        scratch.mkdir()
        content = read_image_file(
            f"{playground.address}/tests/hello@{platform.digest}",
            "/etc/build-arch",
            scratch=scratch,
        )
        machines[str(platform.platform)] = content.decode().strip()
    assert machines == {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
    emulated = {str(p.platform): p.emulated for p in result.platforms}
    assert emulated == {"linux/amd64": False, "linux/arm64": True}


def test_build_args_with_shell_metacharacters_arrive_verbatim(published, playground, tmp_path):
    result, _, _ = published
    arm64 = next(p for p in result.platforms if p.platform.architecture == "arm64")
    content = read_image_file(
        f"{playground.address}/tests/hello@{arm64.digest}", "/etc/greeting", scratch=tmp_path
    )
    assert content.decode() == TRICKY_GREETING + "\n"


def test_mapped_build_tasks_and_publish_are_visible_in_prefect(published):
    _, flow_run_id, _ = published
    assert task_runs(flow_run_id) == {
        "pin source": "Completed",
        "check for changes": "Completed",
        "build linux/amd64": "Completed",
        "build linux/arm64": "Completed",
        "publish": "Completed",
    }
    assert artifact_types(flow_run_id) == ["markdown", "table"]
    markdown = next(d for d in artifact_data(flow_run_id) if d.startswith("# Published"))
    assert published[0].index_digest in markdown
    # SBOM and provenance are on by default: the summary lists each referrer by digest
    attestations = published[0].attestations
    assert sorted((a.subject, a.kind) for a in attestations) == [
        ("linux/amd64", "provenance"), ("linux/amd64", "sbom"),
        ("linux/arm64", "provenance"), ("linux/arm64", "sbom")]
    for item in attestations:
        assert f"| {item.subject} | {item.kind} | `{item.digest}` |" in markdown


def test_shared_run_directory_is_removed_after_publish(published):
    _, flow_run_id, work = published
    shared = work / "shared"
    assert not (shared / flow_run_id.hex).exists()
    assert not (work / "builds" / flow_run_id.hex).exists()


def test_no_mount_or_scratch_storage_is_left_behind(published):
    _, _, work = published
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(work) not in mounts
    assert list((work / "builds").iterdir()) == []


def test_platforms_build_at_the_same_time_and_publish_after_both(published):
    _, flow_run_id, _ = published
    windows = task_run_windows(flow_run_id)
    amd64, arm64 = windows["build linux/amd64"], windows["build linux/arm64"]
    assert amd64[0] < arm64[1] and arm64[0] < amd64[1], f"builds ran one after the other: {windows}"
    assert windows["publish"][0] >= max(amd64[1], arm64[1])
