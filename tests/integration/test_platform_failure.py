"""A platform that fails publishes nothing, and an existing tag keeps its digest."""

from __future__ import annotations

import pytest

from flows.build import PlatformsFailed, build_multiarch_image
from multiarch.orchestrate import build_and_publish
from multiarch.request import BuildRequest, RunnerOptions
from tests.integration.conftest import EXAMPLE_HELLO, registry_files, tag_digest
from tests.integration.prefect_queries import artifact_data, task_run_counts, task_runs

pytestmark = pytest.mark.integration

FAILS_ON_ARM64 = """\
ARG BASE
FROM ${BASE}
RUN uname -m > /etc/build-arch
RUN if [ "$(uname -m)" = aarch64 ]; then echo "this step does not support aarch64" >&2; exit 7; fi
"""


class _Quiet:
    def info(self, msg: str, /) -> None:
        pass


def test_one_failing_platform_publishes_nothing(playground, prefect_server, tmp_path):
    image = f"{playground.address}/tests/partial:latest"
    old = build_and_publish(
        BuildRequest(
            image=image,
            platforms=("linux/amd64",),
            context=str(EXAMPLE_HELLO),
            build_args={"BASE": playground.base},
            insecure_registry=True,
            runner=RunnerOptions(work_dir=str(tmp_path / "old")),
        ),
        log=_Quiet(),
    )
    assert tag_digest(image) == old.index_digest
    context = tmp_path / "context"
    context.mkdir()
    (context / "Containerfile").write_text(FAILS_ON_ARM64)
    stored_before = registry_files(playground)

    with pytest.raises(PlatformsFailed) as failure:
        build_multiarch_image(
            image=image,
            platforms=["linux/amd64", "linux/arm64"],
            context=str(context),
            build_args={"BASE": playground.base},
            allow_emulation=True,
            insecure_registry=True,
            runner=RunnerOptions(work_dir=str(tmp_path / "work")),
        )

    message = str(failure.value)
    assert "1 of 2 platforms failed, nothing was published" in message
    assert "[linux/arm64]: step build exited with" in message
    assert "linux/amd64" not in message
    assert tag_digest(image) == old.index_digest, "the existing tag moved"
    assert registry_files(playground) == stored_before, "something was pushed"


def test_a_deterministic_failure_is_not_retried(playground, prefect_server, tmp_path):
    context = tmp_path / "context"
    context.mkdir()
    (context / "Containerfile").write_text(FAILS_ON_ARM64)
    state = build_multiarch_image(
        image=f"{playground.address}/tests/noretry:latest",
        platforms=["linux/arm64"],
        context=str(context),
        build_args={"BASE": playground.base},
        allow_emulation=True,
        insecure_registry=True,
        runner=RunnerOptions(work_dir=str(tmp_path / "work")),
        return_state=True,
    )
    assert state.is_failed()
    flow_run_id = state.state_details.flow_run_id
    assert task_runs(flow_run_id) == {
        "pin source": "Completed",
        "check for changes": "Completed",
        "build linux/arm64": "Failed",
    }
    assert task_run_counts(flow_run_id)["build linux/arm64"] == 1
    (report,) = [d for d in artifact_data(flow_run_id) if "was not published" in d]
    assert "## linux/arm64" in report
    assert "- step: `build`" in report
    assert "this step does not support aarch64" in report  # the last log lines
    assert tag_digest(f"{playground.address}/tests/noretry:latest") is None
