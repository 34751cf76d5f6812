"""RUN --mount=type=cache through the real buildah: kept between runs on one worker, one
cache per architecture (an arm64 build never sees what an amd64 one left)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from multiarch.orchestrate import build_and_publish
from multiarch.request import BuildRequest, RunnerOptions
from tests.integration.conftest import read_image_file

pytestmark = pytest.mark.integration

APP = """\
ARG BASE
FROM ${BASE}
RUN --mount=type=cache,target=/var/cache/app \\
    sh -c 'uname -m >> /var/cache/app/runs; cat /var/cache/app/runs > /seen'
"""


class _Quiet:
    def info(self, msg: str, /) -> None:
        pass


@pytest.mark.parametrize("toolchain", ["host", "debian13"])
def test_cache_mounts_persist_per_architecture_and_gc_prunes_them(playground, tmp_path,
                                                                  toolchain):
    context, work = tmp_path / "app", tmp_path / "work"
    context.mkdir()
    (context / "Containerfile").write_text(APP)

    def build(tag: str) -> str:
        image = f"{playground.address}/tests/cache-mounts:{tag}"
        build_and_publish(BuildRequest(
            image=image, platforms=["linux/amd64", "linux/arm64"], context=str(context),
            build_args={"BASE": playground.base}, allow_emulation=True,
            insecure_registry=True, supply_chain={"sbom": False, "provenance": False},
            runner=RunnerOptions(work_dir=str(work), toolchain=toolchain)), log=_Quiet())
        return image

    build("1")
    image = build("2")
    index = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                            f"docker://{image}"], capture_output=True, check=True).stdout
    for entry in json.loads(index)["manifests"]:
        arch = {"amd64": "x86_64", "arm64": "aarch64"}[entry["platform"]["architecture"]]
        (tmp_path / arch).mkdir()
        seen = read_image_file(f"{image.rsplit(':', 1)[0]}@{entry['digest']}", "/seen",
                               scratch=tmp_path / arch).decode().split()
        assert seen == [arch, arch]  # the first run's entry is there, and only its own arch
    pruned = subprocess.run([sys.executable, "-m", "flows.cli", "gc", "--work-dir", str(work),
                             "--cache-max-age", "0"], capture_output=True, text=True,
                            check=True).stdout
    assert pruned.count("cache mounts unused for 0 days removed") == 2
    assert not [p for p in (work / "cache-mounts").iterdir() if p.is_dir()]
