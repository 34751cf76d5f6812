"""The registry cache: a rebuild on an empty store reuses the RUN layer it pushed earlier.

The early RUN writes random bytes, so running it again would give another layer: an
identical RUN layer digest proves the step was not run, but pulled from the cache
repository. The late COPY takes a file the test changes, so its layer must differ.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import httpx
import pytest

from devtools.registry import free_port
from multiarch.cache_checks import check_cache_access
from multiarch.errors import ConfigurationError, StepFailure
from multiarch.orchestrate import build_and_publish
from multiarch.platforms import Platform
from multiarch.preflight import preflight_request
from multiarch.request import BuildRequest, RunnerOptions
from multiarch.runners.local.runner import build_platform
from multiarch.source import pin_source
from multiarch.workspace import run_dirs
from tests.integration.conftest import skopeo_raw

pytestmark = pytest.mark.integration
LOG = logging.getLogger("tests.cache")

APP = """\
ARG BASE
FROM ${BASE}
RUN head -c 64 /dev/urandom > /random
COPY message.txt /message.txt
"""


def make_context(path: Path, message: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Containerfile").write_text(APP)
    (path / "message.txt").write_text(message)
    return path


def build(playground, context: Path, work: Path, *, repository: str, tag: str,
          platform: str, cache: str) -> str:
    """Build and publish one platform; returns the pushed reference."""
    request = BuildRequest(
        image=f"{playground.address}/{repository}:{tag}", platforms=(platform,),
        context=str(context), build_args={"BASE": playground.base}, cache=cache,
        allow_emulation=True, insecure_registry=True,
        runner=RunnerOptions(work_dir=str(work)),
    )
    build_and_publish(request, log=LOG)
    return str(request.image)


def diff_ids(reference: str, platform: str) -> list[str]:
    """The image's uncompressed layer digests, bottom first, for one platform."""
    index = json.loads(skopeo_raw(reference))
    wanted = Platform.parse(platform)
    entry = next(m for m in index["manifests"]
                 if m["platform"]["architecture"] == wanted.architecture)
    name = reference.rsplit(":", 1)[0]
    config = subprocess.run(
        ["skopeo", "inspect", "--config", "--raw", "--tls-verify=false",
         f"docker://{name}@{entry['digest']}"],
        check=True, capture_output=True, timeout=60,
    ).stdout
    return json.loads(config)["rootfs"]["diff_ids"]


def catalog(playground) -> list[str]:
    answer = httpx.get(f"http://{playground.address}/v2/_catalog?n=1000", timeout=30)
    answer.raise_for_status()
    return answer.json()["repositories"]


def cache_tags(playground, repository: str) -> list[str]:
    answer = httpx.get(f"http://{playground.address}/v2/{repository}/tags/list", timeout=30)
    return answer.json().get("tags") or [] if answer.status_code == 200 else []


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64"])
def test_a_warm_rebuild_reuses_the_run_layer_from_the_cache_repository(
    playground, tmp_path: Path, platform: str
) -> None:
    arch = Platform.parse(platform).architecture
    repository = f"tests/cache-{arch}"
    context = make_context(tmp_path / "context", "first\n")
    first = build(playground, context, tmp_path / "w1", repository=repository, tag="one",
                  platform=platform, cache="registry")
    make_context(context, "second\n")
    second = build(playground, context, tmp_path / "w2", repository=repository, tag="two",
                   platform=platform, cache="registry")

    before, after = diff_ids(first, platform), diff_ids(second, platform)
    base = len(diff_ids(playground.base, platform))
    assert len(before) == len(after) == base + 2, "one layer for the RUN, one for the COPY"
    assert before[:base] == after[:base]
    assert after[base] == before[base], "the RUN ran again instead of coming from the cache"
    assert after[base + 1] != before[base + 1], "the changed COPY must give a new layer"
    assert f"{repository}/cache-{arch}" in catalog(playground)
    assert cache_tags(playground, f"{repository}/cache-{arch}")


def test_without_the_cache_the_run_step_runs_again(playground, tmp_path: Path) -> None:
    context = make_context(tmp_path / "context", "first\n")
    first = build(playground, context, tmp_path / "w1", repository="tests/nocache", tag="one",
                  platform="linux/amd64", cache="none")
    make_context(context, "second\n")
    second = build(playground, context, tmp_path / "w2", repository="tests/nocache", tag="two",
                   platform="linux/amd64", cache="none")

    base = len(diff_ids(playground.base, "linux/amd64"))
    before, after = diff_ids(first, "linux/amd64"), diff_ids(second, "linux/amd64")
    assert before[:base] == after[:base]
    assert before[base] != after[base], "without a cache the random RUN layer is new"
    assert not [r for r in catalog(playground) if r.startswith("tests/nocache/")]


def test_layers_built_before_a_failing_step_stay_in_the_cache(
    playground, tmp_path: Path
) -> None:
    """The retry of a failed build resumes from the steps that succeeded."""
    context = make_context(tmp_path / "context", "first\n")
    (context / "Containerfile").write_text(APP + "RUN false\n")
    request = BuildRequest(
        image=f"{playground.address}/tests/cache-failing:one", platforms=("linux/amd64",),
        context=str(context), build_args={"BASE": playground.base}, cache="registry",
        insecure_registry=True, runner=RunnerOptions(work_dir=str(tmp_path / "w")),
    )
    with pytest.raises(StepFailure):
        build_platform(request, pin_source(request), request.platforms[0],
                       dirs=run_dirs(request, "failing"), log=LOG)
    assert len(cache_tags(playground, "tests/cache-failing/cache-amd64")) >= 2, (
        "the RUN and COPY layers were pushed before the failing step"
    )


def test_preflight_checks_each_cache_repository(playground, tmp_path: Path) -> None:
    context = make_context(tmp_path / "context", "first\n")
    request = BuildRequest(
        image=f"{playground.address}/tests/cache-preflight:one",
        platforms=("linux/amd64", "linux/arm64"), context=str(context), cache="registry",
        insecure_registry=True, runner=RunnerOptions(work_dir=str(tmp_path / "w")),
    )
    notes = preflight_request(request)
    for arch in ("amd64", "arm64"):
        assert (f"cache: {playground.address} accepts a push to "
                f"tests/cache-preflight/cache-{arch}") in notes


def test_an_unreachable_cache_registry_is_refused_before_any_build(tmp_path: Path) -> None:
    context = make_context(tmp_path / "context", "first\n")
    fields = {"image": f"127.0.0.1:{free_port()}/tests/app:one", "platforms": ("linux/amd64",),
              "context": str(context), "cache": "registry", "insecure_registry": True}
    with pytest.raises(ConfigurationError, match=r"^cache: .*tests/app/cache-amd64"):
        check_cache_access(BuildRequest(**fields))
    git = {**fields, "context": "https://git.example.com/team/app.git",
           "runner": RunnerOptions(kind="kubernetes")}
    (note,) = check_cache_access(BuildRequest(**git))
    assert note.startswith("cache: ") and "not checked from this machine" in note
