"""Rebuild decisions: which bases a Containerfile has, and when a tag is up to date."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from multiarch.containerfile import base_images, final_base
from multiarch.rebuild import (
    BASES_ANNOTATION,
    INPUTS_ANNOTATION,
    Fingerprint,
    decide,
    index_platforms,
    inputs_digest,
    tree_digest,
)
from multiarch.request import BuildRequest
from multiarch.source import PinnedSource

MULTISTAGE = """\
# syntax=docker/dockerfile:1
ARG GO=1.22
ARG RUNTIME=registry.example.com/base/runtime:3
FROM --platform=$BUILDPLATFORM docker.io/library/golang:${GO} AS build
RUN go build ./...
FROM build AS test
RUN go test ./...
FROM scratch AS empty
FROM ${RUNTIME} \\
    AS final
COPY --from=build /app /app
"""


def test_bases_follow_global_args_overrides_aliases_and_scratch():
    assert base_images(MULTISTAGE, {}) == [
        "docker.io/library/golang:1.22",
        "registry.example.com/base/runtime:3",
    ]
    assert base_images(MULTISTAGE, {"GO": "1.23"})[0] == "docker.io/library/golang:1.23"


def test_final_base_is_the_published_stage_ancestor():
    assert final_base(MULTISTAGE, {}) == "registry.example.com/base/runtime:3"
    assert final_base(MULTISTAGE, {}, target="test") == "docker.io/library/golang:1.22"
    assert final_base(MULTISTAGE, {}, target="empty") is None


def test_example_containerfile_base_comes_from_the_build_arg():
    text = "ARG BASE=127.0.0.1:5000/library/busybox:latest\nFROM ${BASE}\nRUN true\n"
    assert base_images(text, {}) == ["127.0.0.1:5000/library/busybox:latest"]
    assert base_images(text, {"BASE": "reg.test/b:1"}) == ["reg.test/b:1"]


WANTED = Fingerprint(
    revision="abc",
    inputs_digest="sha256:in",
    bases={"reg.test/base:1": "sha256:b1"},
    final_base="reg.test/base:1",
)


def test_same_fingerprint_is_up_to_date():
    decision = decide(current=WANTED.annotations(), wanted=WANTED, index_digest="sha256:idx")
    assert decision.up_to_date
    assert "base reg.test/base:1 still sha256:b1" in decision.reasons


def test_moved_base_rebuilds_and_says_from_what_to_what():
    current = {
        **WANTED.annotations(),
        BASES_ANNOTATION: json.dumps({"reg.test/base:1": "sha256:b0"}),
    }
    decision = decide(current=current, wanted=WANTED, index_digest="sha256:idx")
    assert not decision.up_to_date
    assert decision.reasons == ("base reg.test/base:1 moved from sha256:b0 to sha256:b1",)


def test_new_revision_changed_inputs_and_missing_tag_rebuild():
    older = Fingerprint(revision="old", inputs_digest="sha256:in", bases=WANTED.bases)
    assert (
        "source revision changed: old -> abc"
        in decide(current=older.annotations(), wanted=WANTED, index_digest="x").reasons
    )
    no_revision = Fingerprint(revision=None, inputs_digest="sha256:new", bases=WANTED.bases)
    changed = {**no_revision.annotations(), INPUTS_ANNOTATION: "sha256:old"}
    assert not decide(current=changed, wanted=no_revision, index_digest="x").up_to_date
    assert decide(current=None, wanted=WANTED, index_digest=None).reasons == (
        "the tag does not exist yet",
    )
    foreign = decide(
        current={"org.opencontainers.image.created": "x"}, wanted=WANTED, index_digest="x"
    )
    assert not foreign.up_to_date


def test_unresolvable_base_never_counts_as_unchanged():
    wanted = Fingerprint(revision="abc", inputs_digest="sha256:in", bases={"gone:1": None})
    assert not decide(current=wanted.annotations(), wanted=wanted, index_digest="x").up_to_date


def test_a_platform_missing_from_the_index_rebuilds_to_retry_it():
    """An optional platform left out keeps the same fingerprint: only the index shows it."""
    wanted = Fingerprint(revision="abc", inputs_digest="sha256:in", bases=WANTED.bases,
                         platforms=("linux/amd64", "linux/arm64"))
    full = decide(current=wanted.annotations(), wanted=wanted, index_digest="x",
                  published={"linux/amd64", "linux/arm64"})
    assert full.up_to_date
    partial = decide(current=wanted.annotations(), wanted=wanted, index_digest="x",
                     published={"linux/amd64"})
    assert not partial.up_to_date
    assert partial.reasons == ("linux/arm64 is missing from the published index (an optional "
                               "platform left out when it failed): building to retry it",)


def test_index_platforms_are_read_in_normal_form_skipping_unknown_entries():
    index = {"manifests": [
        {"digest": "sha256:a", "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "sha256:b", "platform": {"os": "linux", "architecture": "arm64",
                                            "variant": "v8"}},
        {"digest": "sha256:c", "platform": {"os": "linux", "architecture": "arm",
                                            "variant": "v7"}},
        {"digest": "sha256:d", "platform": {"os": "unknown", "architecture": "unknown"}},
        {"digest": "sha256:e"},
    ]}
    assert index_platforms(index) == {"linux/amd64", "linux/arm64", "linux/arm/v7"}
    assert index_platforms({}) == set()


def scratch_inputs_digest(context: Path, **fields: Any) -> str:
    """The inputs digest of a one-platform `FROM scratch` request on `context`."""
    (context / "Containerfile").write_text("FROM scratch\n")
    source = PinnedSource(kind="local", location=str(context))
    request = BuildRequest(
        image="reg.test/a/b:1", platforms=("linux/amd64",), context=str(context), **fields
    )
    return inputs_digest(request, source, "FROM scratch\n")


def test_inputs_digest_changes_with_build_args_and_context_content(tmp_path):
    def digest(**fields):
        return scratch_inputs_digest(tmp_path, **fields)

    first = digest()
    assert digest() == first
    assert digest(build_args={"X": "1"}) != first
    before = tree_digest(tmp_path)
    (tmp_path / "app.txt").write_text("v2")
    assert tree_digest(tmp_path) != before
    assert digest() != first


def test_switching_index_format_rebuilds_and_the_default_keeps_old_digests(tmp_path):
    def digest(**fields):
        return scratch_inputs_digest(tmp_path, **fields)

    assert digest(index_format="oci") == digest()
    assert digest(index_format="docker") != digest()
