"""optional_platforms: an optional platform that fails is left out of a published index,
said so in the result, the artifacts and the CLI, and retried by the next if-changed run;
a required one failing still publishes nothing."""

from __future__ import annotations

import json

import pytest

from flows.build import build_multiarch_image
from multiarch.orchestrate import build_and_publish
from multiarch.partial import PlatformsFailed
from multiarch.request import BuildRequest, RunnerOptions
from tests.integration.conftest import registry_files, skopeo_raw, tag_digest
from tests.integration.prefect_queries import artifact_data, task_runs
from tests.integration.test_cli import multiarch
from tests.integration.test_platform_failure import FAILS_ON_ARM64

pytestmark = pytest.mark.integration

ARM64_REASON = "this step does not support aarch64"


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str, /) -> None:
        self.lines.append(msg)


def index_platforms(reference: str) -> list[str]:
    index = json.loads(skopeo_raw(reference))
    return [f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"]]


def test_optional_platform_failing_is_left_out_and_retried_by_the_next_if_changed_run(
        playground, prefect_server, tmp_path):
    image = f"{playground.address}/tests/optional:latest"
    context = tmp_path / "context"
    context.mkdir()
    (context / "Containerfile").write_text(FAILS_ON_ARM64)

    state = build_multiarch_image(
        image=image,
        platforms=["linux/amd64", "linux/arm64"],
        optional_platforms=["linux/arm64"],
        context=str(context),
        build_args={"BASE": playground.base},
        allow_emulation=True,
        insecure_registry=True,
        rebuild="if-changed",
        runner=RunnerOptions(work_dir=str(tmp_path / "work")),
        return_state=True,
    )

    assert state.is_completed(), state.message
    result = state.result()
    assert [str(p.platform) for p in result.platforms] == ["linux/amd64"]
    (left,) = result.left_out
    assert str(left.platform) == "linux/arm64"
    assert left.reason.startswith("step build exited with"), left.reason
    assert tag_digest(image) == result.index_digest
    assert index_platforms(image) == ["linux/amd64"]
    # SBOM and provenance only for what is in the index
    assert {a.subject for a in result.attestations} == {"linux/amd64"}
    flow_run_id = state.state_details.flow_run_id
    runs = task_runs(flow_run_id)
    assert runs["build linux/arm64"] == "Failed"
    assert runs["publish"] == "Completed"
    artifacts = artifact_data(flow_run_id)
    (summary,) = [a for a in artifacts if a.startswith("# Published")]
    assert "- left out: `linux/arm64`" in summary
    assert "## Left out" in summary and "- **linux/arm64**: step build exited with" in summary
    (table,) = [a for a in artifacts if '"platform"' in a]
    assert "linux/arm64" in table and "left out: step build exited with" in table

    # Same inputs, so the fingerprint matches; the index lacks arm64, so it is retried.
    # Through the CLI this time, as a user runs it.
    done = multiarch(
        "build", "--image", image, "--platform", "linux/amd64", "--platform", "linux/arm64",
        "--optional-platform", "linux/arm64", "--context", str(context),
        "--build-arg", f"BASE={playground.base}", "--allow-emulation", "--insecure-registry",
        "--rebuild", "if-changed", "--work-dir", str(tmp_path / "work2"), "--json",
        api_url=prefect_server,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    again = json.loads(done.stdout)
    assert again["up_to_date"] is False
    assert [x["platform"] for x in again["left_out"]] == ["linux/arm64"]
    assert again["left_out"][0]["reason"].startswith("step build exited with")
    logged = done.stdout + done.stderr
    assert "linux/arm64 is missing from the published index" in logged
    assert "linux/arm64 is left out of the index (optional, it failed)" in logged
    assert index_platforms(image) == ["linux/amd64"]


def test_required_platform_failing_publishes_nothing_even_with_optional_ones(
        playground, tmp_path):
    image = f"{playground.address}/tests/optional-required:latest"
    context = tmp_path / "context"
    context.mkdir()
    (context / "Containerfile").write_text(FAILS_ON_ARM64)
    stored_before = registry_files(playground)
    log = _Lines()

    with pytest.raises(PlatformsFailed) as failure:
        build_and_publish(  # the plain path (no Prefect) applies the same policy
            BuildRequest(
                image=image,
                platforms=("linux/amd64", "linux/arm64"),
                optional_platforms=("linux/amd64",),
                context=str(context),
                build_args={"BASE": playground.base},
                allow_emulation=True,
                insecure_registry=True,
                runner=RunnerOptions(work_dir=str(tmp_path / "work")),
            ),
            log=log,
        )

    message = str(failure.value)
    assert message.startswith("1 of 2 platforms failed, nothing was published: "
                              "[linux/arm64]: step build exited with")
    assert tag_digest(image) is None
    assert registry_files(playground) == stored_before, "something was pushed"
    assert not any("left out" in line for line in log.lines)
