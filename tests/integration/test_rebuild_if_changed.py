"""rebuild: if-changed against the real registry: skip when nothing moved, rebuild when
the base image was updated upstream."""

from __future__ import annotations

import json

import pytest

from flows.build import build_multiarch_image
from multiarch.orchestrate import build_and_publish
from multiarch.request import BuildRequest, RunnerOptions
from tests.integration.conftest import skopeo_raw, tag_digest
from tests.integration.prefect_queries import artifact_data, task_runs

pytestmark = pytest.mark.integration

APP = """\
ARG BASE
FROM ${BASE}
RUN uname -m > /etc/build-arch
"""


class _Quiet:
    def info(self, msg: str, /) -> None:
        pass


def push_base(playground, tmp_path, *, version: str) -> str:
    """A base image of our own, so that 'upstream updated it' is something we can do."""
    context = tmp_path / f"base-{version}"
    context.mkdir()
    (context / "Containerfile").write_text(
        f"ARG BASE\nFROM ${{BASE}}\nRUN echo {version} > /etc/base-version\n"
    )
    result = build_and_publish(
        BuildRequest(
            image=f"{playground.address}/tests/rebuild-base:latest",
            platforms=("linux/amd64", "linux/arm64"),
            context=str(context),
            build_args={"BASE": playground.base},
            allow_emulation=True,
            insecure_registry=True,
            runner=RunnerOptions(work_dir=str(tmp_path / f"w-{version}")),
        ),
        log=_Quiet(),
    )
    return result.index_digest


def test_if_changed_skips_unchanged_and_rebuilds_after_a_base_update(
    playground, prefect_server, tmp_path
):
    base = f"{playground.address}/tests/rebuild-base:latest"
    first_base = push_base(playground, tmp_path, version="v1")
    context = tmp_path / "app"
    context.mkdir()
    (context / "Containerfile").write_text(APP)
    image = f"{playground.address}/tests/rebuilt:nightly"

    def run():
        return build_multiarch_image(
            image=image,
            platforms=["linux/amd64", "linux/arm64"],
            context=str(context),
            build_args={"BASE": base},
            allow_emulation=True,
            insecure_registry=True,
            rebuild="if-changed",
            runner=RunnerOptions(work_dir=str(tmp_path / "work")),
            return_state=True,
        )

    built = run()
    assert built.is_completed(), built.message
    first = built.result()
    assert not first.up_to_date
    index = json.loads(skopeo_raw(image))
    assert index["annotations"]["org.opencontainers.image.base.name"] == base
    assert index["annotations"]["org.opencontainers.image.base.digest"] == first_base

    skipped = run()
    assert skipped.is_completed(), skipped.message
    again = skipped.result()
    assert again.up_to_date
    assert again.index_digest == first.index_digest
    assert [p.digest for p in again.platforms] == [p.digest for p in first.platforms]
    runs = task_runs(skipped.state_details.flow_run_id)
    assert not any(name.startswith("build ") for name in runs), runs
    assert "publish" not in runs
    (summary,) = [d for d in artifact_data(skipped.state_details.flow_run_id) if "up to date" in d]
    assert f"base {base} still {first_base}" in summary
    assert tag_digest(image) == first.index_digest

    second_base = push_base(playground, tmp_path, version="v2")
    assert second_base != first_base
    rebuilt = run()
    assert rebuilt.is_completed(), rebuilt.message
    third = rebuilt.result()
    assert not third.up_to_date
    assert third.index_digest != first.index_digest
    assert tag_digest(image) == third.index_digest
    assert (
        json.loads(skopeo_raw(image))["annotations"]["org.opencontainers.image.base.digest"]
        == second_base
    )
    runs = task_runs(rebuilt.state_details.flow_run_id)
    assert runs["build linux/arm64"] == "Completed" and runs["publish"] == "Completed"
