"""Prefect retries a build only for transient failures (the real engine, a scripted builder)."""

from __future__ import annotations

import pytest
from prefect import flow

import tasks.build
from multiarch.errors import StepFailed, TransientStepFailure
from multiarch.platforms import Platform
from multiarch.request import BuildRequest
from multiarch.results import PlatformImage
from multiarch.runners.local.runner import LocalRunner
from multiarch.source import PinnedSource
from multiarch.workspace import RunDirs
from tests.integration.conftest import EXAMPLE_HELLO

pytestmark = pytest.mark.integration

PLATFORM = Platform.parse("linux/amd64")


def _image() -> PlatformImage:
    return PlatformImage(
        platform=PLATFORM,
        digest="sha256:" + "a" * 64,
        size=1,
        emulated=False,
        duration_s=0.1,
        layout="/nowhere",
        layout_ref="image",
    )


def _run_build_task(tmp_path) -> object:
    request = BuildRequest(
        image="127.0.0.1:1/x/y:z", platforms=("linux/amd64",), context=str(EXAMPLE_HELLO)
    )
    source = PinnedSource(kind="local", location=str(EXAMPLE_HELLO))
    dirs = RunDirs(work=tmp_path, shared=tmp_path / "shared", run_id="r")
    quick = tasks.build.build_platform_task.with_options(retry_delay_seconds=0)

    @flow
    def one_build() -> PlatformImage:
        return quick(request, source, PLATFORM, dirs)

    return one_build(return_state=True)


def test_transient_failure_is_retried_until_it_passes(prefect_server, tmp_path, monkeypatch):
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise TransientStepFailure(
                "[linux/amd64]: step build exited with 125: 503 Service Unavailable",
                step="build",
                exit_code=125,
                tail=[],
            )
        return _image()

    monkeypatch.setattr(LocalRunner, "build", flaky)
    state = _run_build_task(tmp_path)
    assert state.is_completed()
    assert len(calls) == 2


def test_permanent_failure_is_not_retried(prefect_server, tmp_path, monkeypatch):
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise StepFailed(
            "[linux/amd64]: step build exited with 1: no such file",
            step="build",
            exit_code=1,
            tail=[],
        )

    monkeypatch.setattr(LocalRunner, "build", broken)
    state = _run_build_task(tmp_path)
    assert state.is_failed()
    assert len(calls) == 1


def test_transient_failures_give_up_after_the_retry_budget(prefect_server, tmp_path, monkeypatch):
    calls = []

    def down(*args, **kwargs):
        calls.append(1)
        raise TransientStepFailure(
            "registry down: connection refused", step="build", exit_code=125, tail=[]
        )

    monkeypatch.setattr(LocalRunner, "build", down)
    state = _run_build_task(tmp_path)
    assert state.is_failed()
    assert len(calls) == 1 + tasks.build.BUILD_RETRIES
