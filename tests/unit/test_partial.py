"""The partial-failure policy: optional platforms may be left out, required ones may not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from multiarch.errors import StepFailed
from multiarch.partial import PlatformsFailed, settle
from multiarch.platforms import Platform
from multiarch.request import BuildRequest
from multiarch.results import LeftOut, PlatformImage

AMD64, ARM64, ARMV7 = (Platform.parse(p) for p in ("linux/amd64", "linux/arm64", "linux/arm/v7"))


def request(tmp_path: Path, *optional: str) -> BuildRequest:
    (tmp_path / "Containerfile").write_text("FROM scratch\n")
    return BuildRequest(image="127.0.0.1:5000/t/app:1", context=str(tmp_path),
                        platforms=["linux/amd64", "linux/arm64", "linux/arm/v7"],
                        optional_platforms=list(optional))


def image(platform: Platform) -> PlatformImage:
    return PlatformImage(platform=platform, digest="sha256:" + "a" * 64, size=1,
                         emulated=False, duration_s=1.0, layout="/x")


def run_failed(platform: Platform, code: int = 7) -> StepFailed:
    return StepFailed(f"[{platform}]: step build exited with {code}: RUN step failed",
                      step="build", exit_code=code, tail=[])


def settled(req: BuildRequest, images: list[PlatformImage], failures: list[Any]
            ) -> tuple[Any, list[str]]:
    warnings: list[str] = []
    return settle(req, images, failures, warn=warnings.append), warnings


def test_nothing_failed_publishes_everything_without_a_warning(tmp_path: Path) -> None:
    built, warnings = settled(request(tmp_path, "linux/arm64"),
                              [image(AMD64), image(ARM64), image(ARMV7)], [])
    assert [str(i.platform) for i in built.images] == ["linux/amd64", "linux/arm64",
                                                       "linux/arm/v7"]
    assert built.left_out == []
    assert warnings == []


def test_only_optional_failures_publish_the_rest_and_say_why(tmp_path: Path) -> None:
    req = request(tmp_path, "linux/arm64", "linux/arm/v7")
    built, warnings = settled(req, [image(AMD64)],
                              [(ARM64, run_failed(ARM64)), (ARMV7, "Crashed")])
    assert [str(i.platform) for i in built.images] == ["linux/amd64"]
    assert built.left_out == [
        LeftOut(platform=ARM64, reason="step build exited with 7: RUN step failed"),
        LeftOut(platform=ARMV7, reason="Crashed"),
    ]
    assert warnings == [
        "linux/arm64 is left out of the index (optional, it failed): step build exited with 7: "
        "RUN step failed",
        "linux/arm/v7 is left out of the index (optional, it failed): Crashed",
    ]


def test_a_required_failure_publishes_nothing_and_names_every_failed_platform(
        tmp_path: Path) -> None:
    with pytest.raises(PlatformsFailed) as failure:
        settled(request(tmp_path, "linux/arm64"), [image(ARMV7)],
                [(AMD64, run_failed(AMD64, 1)), (ARM64, run_failed(ARM64))])
    assert str(failure.value) == (
        "2 of 3 platforms failed, nothing was published (a required platform failed; "
        "linux/arm64 is optional): [linux/amd64]: step build exited with 1: RUN step failed; "
        "[linux/arm64]: step build exited with 7: RUN step failed")
    assert failure.value.platforms == ("linux/amd64", "linux/arm64")


def test_without_optional_platforms_any_failure_publishes_nothing(tmp_path: Path) -> None:
    with pytest.raises(PlatformsFailed) as failure:
        settled(request(tmp_path), [image(AMD64), image(ARMV7)], [(ARM64, run_failed(ARM64))])
    assert str(failure.value) == ("1 of 3 platforms failed, nothing was published: "
                                  "[linux/arm64]: step build exited with 7: RUN step failed")
