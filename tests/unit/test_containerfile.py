"""The images a Containerfile builds from, read without building it."""

from __future__ import annotations

from multiarch.containerfile import base_images, final_base, instructions

MULTI = """\
ARG GO=registry.example.com/golang:1.23
FROM --platform=$BUILDPLATFORM ${GO} AS build
RUN --mount=type=cache,target=/root/.cache \\
    --mount=type=bind,from=registry.example.com/tools:2,source=/bin,target=/t \\
    go build ./...
FROM registry.example.com/debian:13
COPY --from=build /out/app /app
COPY --from=registry.example.com/tini:0.19 /tini /tini
COPY --from=0 /etc/passwd /etc/passwd
RUN --mount=from=build,source=/out,target=/o true
"""


def test_copy_from_and_mount_from_images_are_bases_and_stages_are_not():
    assert base_images(MULTI, {}) == [
        "registry.example.com/golang:1.23", "registry.example.com/tools:2",
        "registry.example.com/debian:13", "registry.example.com/tini:0.19"]


def test_a_build_arg_names_the_copied_image():
    text = "ARG T=x/tini:1\nFROM scratch\nCOPY --from=${T} /tini /tini\n"
    assert base_images(text, {"T": "registry.example.com/tini:2"}) == [
        "registry.example.com/tini:2"]


HEREDOC = """\
FROM registry.example.com/base:1
RUN <<EOF
FROM evil.example.com/not-a-base:1
COPY --from=evil.example.com/nor-this:1 / /
EOF
COPY <<-"CONF" /etc/app.conf
\tFROM inside a file
\tCONF
RUN echo done
"""


def test_heredoc_bodies_are_not_instructions():
    assert base_images(HEREDOC, {}) == ["registry.example.com/base:1"]
    assert [k for k, _ in instructions(HEREDOC)] == ["FROM", "RUN", "COPY", "RUN"]
    assert final_base(HEREDOC, {}) == "registry.example.com/base:1"


def test_two_heredocs_on_one_line_end_in_order():
    text = "FROM b:1\nRUN <<A <<B\none\nA\ntwo\nB\nFROM c:2\n"
    assert base_images(text, {}) == ["b:1", "c:2"]
