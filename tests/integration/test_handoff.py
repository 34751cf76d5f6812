"""The registry handoff: builds push their platform images by digest, publish moves only
manifest bytes, and no shared directory is used."""

from __future__ import annotations

import json

import pytest

from multiarch.errors import PublishError
from multiarch.orchestrate import build_and_publish
from multiarch.platforms import Platform
from multiarch.publish import publish_images
from multiarch.references import ImageReference
from multiarch.request import BuildRequest, RunnerOptions
from multiarch.results import PlatformImage
from multiarch.source import PinnedSource
from tests.integration.conftest import EXAMPLE_HELLO, read_image_file, skopeo_raw, tag_digest

pytestmark = pytest.mark.integration


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str, /) -> None:
        self.lines.append(msg)


def test_registry_handoff_publishes_both_platforms_without_a_shared_directory(
        playground, tmp_path):
    image = f"{playground.address}/tests/handoff-registry"
    work = tmp_path / "work"
    log = Lines()
    result = build_and_publish(BuildRequest(
        image=f"{image}:latest", tags=("v1",), platforms=("linux/amd64", "linux/arm64"),
        context=str(EXAMPLE_HELLO), build_args={"BASE": playground.base},
        allow_emulation=True, insecure_registry=True, handoff="registry",
        runner=RunnerOptions(work_dir=str(work)),
    ), log=log)

    assert tag_digest(f"{image}:latest") == result.index_digest
    assert tag_digest(f"{image}:v1") == result.index_digest
    index = json.loads(skopeo_raw(f"{image}@{result.index_digest}"))
    assert [(m["platform"]["architecture"], m["digest"]) for m in index["manifests"]] == \
        [(p.platform.architecture, p.digest) for p in result.platforms]
    for entry in result.platforms:  # each platform was pushed by its build, by digest
        assert tag_digest(f"{image}@{entry.digest}") == entry.digest
    arch = read_image_file(f"{image}@{result.platforms[1].digest}", "/etc/build-arch",
                           scratch=tmp_path)
    assert arch.strip() == b"aarch64"
    # Publish moved no image data: no skopeo push of layouts, only the index PUT.
    publish_lines = [line for line in log.lines if line.startswith("[publish]")]
    assert not any("pushing" in line for line in publish_lines), publish_lines
    assert any("index of 2 pushed platforms" in line for line in publish_lines)
    # Nothing went to a shared directory, and the builds' scratch space is gone.
    assert not (work / "shared").exists()
    assert not any((work / "builds").iterdir())


def test_a_platform_missing_from_the_registry_publishes_nothing(playground, tmp_path):
    image = ImageReference.model_validate(f"{playground.address}/tests/handoff-missing:latest")
    ghost = "sha256:" + "0" * 64
    with pytest.raises(PublishError, match=r"linux/amd64: .*is not in the registry"):
        publish_images(
            [PlatformImage(platform=Platform.parse("linux/amd64"), digest=ghost, size=0,
                           emulated=False, duration_s=0.0, handoff="registry",
                           reference=image.with_digest(ghost))],
            image=image, tags=["latest"], source=PinnedSource(kind="local", location="/x"),
            index_dir=tmp_path / "index", insecure=True, emit=lambda _: None,
        )
    assert tag_digest(str(image)) is None
