"""Unit tests for platform parsing: aliases normalise to one spelling, bad input says why."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from multiarch.platforms import Platform


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", "linux/amd64"),
        ("linux/x86_64", "linux/amd64"),
        ("linux/x86-64", "linux/amd64"),
        ("linux/arm64", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64"),
        ("linux/aarch64", "linux/arm64"),
        ("linux/aarch64/v8", "linux/arm64"),
        ("linux/arm64/v9", "linux/arm64/v9"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/arm/v7", "linux/arm/v7"),
        ("linux/arm/v6", "linux/arm/v6"),
        ("linux/armhf", "linux/arm/v7"),
        ("linux/armel", "linux/arm/v6"),
        ("linux/i386", "linux/386"),
        ("linux/i686", "linux/386"),
        ("linux/amd64/v3", "linux/amd64/v3"),
        ("linux/ppc64le", "linux/ppc64le"),
        ("linux/s390x", "linux/s390x"),
        ("linux/riscv64", "linux/riscv64"),
        ("LINUX/AMD64", "linux/amd64"),
        ("  linux/arm64 \n", "linux/arm64"),
    ],
)
def test_parse_normalises_spellings(text: str, expected: str) -> None:
    assert str(Platform.parse(text)) == expected


def test_alias_spellings_are_equal_and_hash_alike() -> None:
    spellings = ["linux/arm64", "linux/arm64/v8", "linux/aarch64", "linux/aarch64/v8"]
    parsed = {Platform.parse(text) for text in spellings}
    assert len(parsed) == 1


def test_parsed_fields() -> None:
    platform = Platform.parse("linux/armhf")
    assert (platform.os, platform.architecture, platform.variant) == ("linux", "arm", "v7")
    arm64 = Platform.parse("linux/arm64/v8")
    assert (arm64.os, arm64.architecture, arm64.variant) == ("linux", "arm64", None)


def test_explicit_variant_wins_over_alias_default() -> None:
    assert str(Platform.parse("linux/armhf/v6")) == "linux/arm/v6"


@pytest.mark.parametrize(
    ("text", "index_variant"),
    [
        ("linux/arm64", "v8"),
        ("linux/aarch64", "v8"),
        ("linux/arm64/v9", "v9"),
        ("linux/arm", "v7"),
        ("linux/arm/v6", "v6"),
        ("linux/amd64", None),
        ("linux/amd64/v2", "v2"),
        ("linux/s390x", None),
    ],
)
def test_index_variant(text: str, index_variant: str | None) -> None:
    assert Platform.parse(text).index_variant == index_variant


@pytest.mark.parametrize(
    ("text", "slug"),
    [
        ("linux/amd64", "linux-amd64"),
        ("linux/arm/v7", "linux-arm-v7"),
        ("linux/arm64", "linux-arm64"),
    ],
)
def test_slug_has_no_slashes(text: str, slug: str) -> None:
    assert Platform.parse(text).slug == slug


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("linux", "is not of the form os/arch[/variant]"),
        ("amd64", "is not of the form os/arch[/variant]"),
        ("linux/amd64/v3/extra", "is not of the form os/arch[/variant]"),
        ("linux//amd64", "is not of the form os/arch[/variant]"),
        ("linux/", "is not of the form os/arch[/variant]"),
        ("", "is not of the form os/arch[/variant]"),
        ("windows/amd64", "buildah builds linux images only"),
        ("darwin/arm64", "buildah builds linux images only"),
        ("linux/sparc", "architecture 'sparc' is unknown"),
        ("linux/amd64/v9", "variant 'v9' is not valid for amd64: use one of v1, v2, v3, v4"),
        ("linux/arm/v8", "variant 'v8' is not valid for arm: use one of v5, v6, v7"),
        ("linux/arm64/v7", "variant 'v7' is not valid for arm64"),
        ("linux/386/v1", "variant 'v1' is not valid for 386: use no variant"),
        ("linux/amd64!", "characters outside [a-z0-9_-]"),
        ("linux/amd 64", "characters outside [a-z0-9_-]"),
    ],
)
def test_parse_rejects_with_a_fix(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        Platform.parse(text)
    assert fragment in str(info.value)


def test_unknown_architecture_lists_known_ones() -> None:
    with pytest.raises(ValueError) as info:
        Platform.parse("linux/sparc")
    assert "amd64" in str(info.value)
    assert "arm64" in str(info.value)


def test_construct_from_fields_is_checked() -> None:
    assert str(Platform(os="linux", architecture="arm", variant="v6")) == "linux/arm/v6"
    with pytest.raises(ValidationError):
        Platform(os="linux", architecture="arm", variant="v9")
    with pytest.raises(ValidationError):
        Platform(os="freebsd", architecture="amd64")


def test_frozen() -> None:
    platform = Platform.parse("linux/amd64")
    with pytest.raises(ValidationError):
        platform.architecture = "arm64"  # type: ignore[misc]


class _Holder(BaseModel):
    platform: Platform
    platforms: list[Platform]


def test_serialises_as_text_and_round_trips() -> None:
    holder = _Holder.model_validate(
        {"platform": "linux/aarch64", "platforms": ["linux/armhf", "linux/x86_64"]}
    )
    assert holder.model_dump() == {
        "platform": "linux/arm64",
        "platforms": ["linux/arm/v7", "linux/amd64"],
    }
    dumped = holder.model_dump_json()
    assert dumped == '{"platform":"linux/arm64","platforms":["linux/arm/v7","linux/amd64"]}'
    assert _Holder.model_validate_json(dumped) == holder


def test_accepts_an_existing_platform_instance() -> None:
    platform = Platform.parse("linux/arm/v6")
    holder = _Holder(platform=platform, platforms=[platform])
    assert holder.platform == platform
