"""Unit tests for push-target references: the registry host is explicit, the grammar strict."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from multiarch.references import ImageReference


def ref(text: str) -> ImageReference:
    return ImageReference.model_validate(text)


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag"),
    [
        ("registry.example.com/team/app:1.2", "registry.example.com", "team/app", "1.2"),
        ("registry.example.com/team/app", "registry.example.com", "team/app", None),
        ("127.0.0.1:5000/examples/hello", "127.0.0.1:5000", "examples/hello", None),
        ("127.0.0.1:5000/examples/hello:v1", "127.0.0.1:5000", "examples/hello", "v1"),
        ("localhost/app", "localhost", "app", None),
        ("localhost:5000/app:latest", "localhost:5000", "app", "latest"),
        ("docker.io/library/busybox:1.36", "docker.io", "library/busybox", "1.36"),
        ("[::1]:5000/app:x", "[::1]:5000", "app", "x"),
        ("ghcr.io/a-b/c__d/e.f_g:Tag_1.0-rc", "ghcr.io", "a-b/c__d/e.f_g", "Tag_1.0-rc"),
        ("  localhost/app:1  ", "localhost", "app", "1"),
    ],
)
def test_parse(text: str, registry: str, repository: str, tag: str | None) -> None:
    parsed = ref(text)
    assert (parsed.registry, parsed.repository, parsed.tag) == (registry, repository, tag)


def test_text_forms() -> None:
    parsed = ref("127.0.0.1:5000/examples/hello:v1")
    assert str(parsed) == "127.0.0.1:5000/examples/hello:v1"
    assert parsed.name == "127.0.0.1:5000/examples/hello"
    assert parsed.with_tag("v2") == "127.0.0.1:5000/examples/hello:v2"
    digest = "sha256:" + "a" * 64
    assert parsed.with_digest(digest) == f"127.0.0.1:5000/examples/hello@{digest}"


def test_str_without_tag_has_no_colon_suffix() -> None:
    assert str(ref("localhost:5000/app")) == "localhost:5000/app"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("app", "has no registry host"),
        ("app:1.0", "has no registry host"),
        ("team/app", "looks like a namespace"),
        ("library/busybox:1.36", "looks like a namespace"),
        ("localhost/app@sha256:" + "a" * 64, "carries a digest"),
        ("localhost/Team/App", "repository 'Team/App' is invalid"),
        ("localhost/app/", "is invalid"),
        ("localhost/a--b_-c", "is invalid"),
        ("localhost/app:", "tag '' is invalid"),
        ("localhost/app:.hidden", "tag '.hidden' is invalid"),
        ("localhost/app:-x", "tag '-x' is invalid"),
        ("localhost/app:" + "t" * 129, "is invalid"),
        ("-bad.example.com/app", "registry host '-bad.example.com' is not a valid host[:port]"),
        ("localhost:123456/app", "is not a valid host[:port]"),
        ("reg_istry.io/app", "is not a valid host[:port]"),
        ("localhost/" + "a" * 256, "longer than 255 characters"),
    ],
)
def test_rejects_with_reason(text: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        ref(text)
    assert fragment in str(info.value)


@pytest.mark.parametrize("port", ["0", "65536", "99999"])
def test_port_out_of_range_is_refused_naming_the_range(port: str) -> None:
    with pytest.raises(ValidationError) as info:
        ref(f"127.0.0.1:{port}/team/app")
    assert f"registry port {port} in '127.0.0.1:{port}' is out of range: use a port from 1 " \
        "to 65535, e.g. 127.0.0.1:5000" in str(info.value)


@pytest.mark.parametrize("registry", ["127.0.0.1:1", "localhost:65535", "[::1]:5000", "[::1]"])
def test_ports_in_range_and_ipv6_hosts_are_accepted(registry: str) -> None:
    assert ref(f"{registry}/team/app").registry == registry


def test_longest_tag_is_accepted() -> None:
    assert ref("localhost/app:" + "t" * 128).tag == "t" * 128


def test_longest_repository_is_accepted() -> None:
    assert ref("localhost/" + "a" * 255).repository == "a" * 255


def test_namespace_hint_spells_out_the_fix() -> None:
    with pytest.raises(ValidationError) as info:
        ref("team/app:1.0")
    message = str(info.value)
    assert "{text}" not in message
    assert "docker.io/team/app:1.0" in message
    assert "127.0.0.1:5000/team/app:1.0" in message


def test_no_registry_hint_names_an_example() -> None:
    with pytest.raises(ValidationError) as info:
        ref("app")
    assert "127.0.0.1:5000/examples/hello" in str(info.value)


def test_fields_are_checked_when_constructed_directly() -> None:
    assert str(ImageReference(registry="localhost", repository="a/b", tag="c")) == "localhost/a/b:c"
    with pytest.raises(ValidationError):
        ImageReference(registry="localhost", repository="A", tag=None)
    with pytest.raises(ValidationError):
        ImageReference(registry="localhost", repository="a", tag="bad tag")


def test_frozen() -> None:
    parsed = ref("localhost/app:1")
    with pytest.raises(ValidationError):
        parsed.tag = "2"  # type: ignore[misc]


class _Holder(BaseModel):
    image: ImageReference


def test_serialises_as_text_and_round_trips() -> None:
    holder = _Holder.model_validate({"image": "127.0.0.1:5000/examples/hello:v1"})
    assert holder.model_dump() == {"image": "127.0.0.1:5000/examples/hello:v1"}
    assert _Holder.model_validate_json(holder.model_dump_json()) == holder
