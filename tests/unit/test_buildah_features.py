"""Containerfile lines the builder's buildah cannot build are refused before any build,
naming the line and the release that has the feature."""

from __future__ import annotations

from pathlib import Path

import pytest

from multiarch import preflight
from multiarch.buildah_features import check_supported, local_buildah_version, unsupported
from multiarch.errors import ConfigurationError
from multiarch.request import BuildRequest

MODERN = """\
FROM registry.example.com/base:1
RUN <<EOF
set -e
echo hi > /hi
EOF
ADD --checksum=sha256:0123 https://example.com/a.tgz /a.tgz
RUN --network=none make test
COPY --parents src/*/go.mod /app/
COPY --link --chmod=0644 app.conf /etc/app.conf
COPY --exclude=*.md . /src
COPY --chmod=0755 run.sh /run.sh
"""


def test_buildah_1_28_refuses_each_line_with_its_release():
    assert unsupported(MODERN, (1, 28, 2), path="build/Containerfile") == [
        "build/Containerfile line 2: heredocs (<<EOF) needs buildah 1.35.0 or later, "
        "the builder has 1.28.2; --toolchain debian13 builds with buildah 1.39.0",
        "build/Containerfile line 6: ADD --checksum needs buildah 1.39.0 or later, "
        "the builder has 1.28.2; --toolchain debian13 builds with buildah 1.39.0",
        "build/Containerfile line 7: RUN --network needs buildah 1.39.0 or later, "
        "the builder has 1.28.2; --toolchain debian13 builds with buildah 1.39.0",
        "build/Containerfile line 8: COPY --parents needs buildah 1.40.0 or later, "
        "the builder has 1.28.2",
        "build/Containerfile line 9: COPY --link needs buildah 1.41.0 or later, "
        "the builder has 1.28.2",
        "build/Containerfile line 10: COPY --exclude: buildah accepts it but keeps "
        "files BuildKit would exclude; no buildah release has BuildKit's meaning: use an "
        "ignore file (.containerignore) instead",
    ]


def test_docker_only_instructions_are_refused_with_their_fix():
    text = ('FROM b:1\nSHELL ["/bin/bash", "-o", "pipefail", "-c"]\n'
            "HEALTHCHECK CMD wget -q localhost\nONBUILD RUN make\n")
    refused = unsupported(text, (1, 39, 3))
    assert refused[0] == (
        "Containerfile line 2: SHELL: the OCI image config has no SHELL: buildah drops it "
        "from an OCI build and runs the RUN steps after it with /bin/sh -c; build with "
        "--format docker to keep it, or write the shell "
        'into each RUN (RUN ["bash", "-o", "pipefail", "-c", "..."])')
    assert refused[1].startswith("Containerfile line 3: HEALTHCHECK: the OCI image config")
    assert "Kubernetes runs probes" in refused[1]
    assert refused[2].startswith("Containerfile line 4: ONBUILD:")
    # a Docker image config has all three
    assert unsupported(text, (1, 28, 2), image_format="docker") == []


def test_buildah_1_39_refuses_only_what_it_lacks():
    assert [line.split(":")[0] for line in unsupported(MODERN, (1, 39, 3))] == [
        "Containerfile line 8", "Containerfile line 9", "Containerfile line 10"]


def test_a_heredoc_body_is_not_checked_and_a_shift_is_not_a_heredoc():
    text = "FROM b:1\nRUN echo $((1 << 2))\nCOPY --chmod=0644 a /a\n"
    assert unsupported(text, (1, 28, 2)) == []
    assert check_supported(text, (1, 28, 2), path="Containerfile")[0].startswith("file: every")


def test_the_refusal_is_one_line_with_a_count():
    with pytest.raises(ConfigurationError) as caught:
        check_supported(MODERN, (1, 28, 2), path="Containerfile")
    assert str(caught.value).startswith("file: Containerfile line 2: heredocs")
    assert str(caught.value).endswith("(and 5 more)")


def test_the_local_buildah_reports_its_version():
    major, minor, _ = local_buildah_version()
    assert (major, minor) >= (1, 28)


def test_preflight_refuses_a_local_context_before_any_build(tmp_path: Path):
    (tmp_path / "Containerfile").write_text("FROM scratch\nCOPY --link a /a\n")
    request = BuildRequest(image="registry.example.com/team/app:1", platforms=["linux/amd64"],
                           context=str(tmp_path))
    with pytest.raises(ConfigurationError, match=r"line 2: COPY --link needs buildah 1\.41"):
        preflight.check_buildah_features(request, None)


CROSS = """\
ARG BASE=busybox
FROM --platform=$BUILDPLATFORM ${BASE} AS build
RUN make
FROM ${BASE}
COPY --from=build /out /out
"""


def test_a_later_from_of_an_image_pulled_for_the_build_platform_is_refused_on_1_39():
    with pytest.raises(ConfigurationError) as refused:
        check_supported(CROSS, (1, 39, 3), path="Containerfile", build_args={})
    assert str(refused.value) == (
        "file: Containerfile line 4: FROM busybox after line 2's FROM "
        "--platform=$BUILDPLATFORM of the same image: buildah 1.39.3 gives it line 2's "
        "platform's image (buildah issue 4742), so each platform's image would hold that "
        "platform's binaries; write FROM --platform=$TARGETPLATFORM busybox")
    # the fix it names builds; another final image, or a stage alias, was never affected
    fixed = CROSS.replace("FROM ${BASE}\n", "FROM --platform=$TARGETPLATFORM ${BASE}\n")
    assert check_supported(fixed, (1, 39, 3), path="Containerfile") == [
        "file: every instruction is one buildah 1.39.3 builds"]
    other = CROSS.replace("FROM ${BASE}\n", "FROM alpine\n")
    assert len(check_supported(other, (1, 39, 3), path="Containerfile")) == 1
    # the build arg decides what ${BASE} is: a final FROM of another image is fine
    assert len(check_supported(CROSS.replace("FROM ${BASE}\n", "FROM busybox:1.36\n"),
                               (1, 39, 3), path="Containerfile", build_args={})) == 1


def test_buildah_1_28_ignoring_from_platform_is_a_note_naming_the_toolchain():
    notes = check_supported(CROSS, (1, 28, 2), path="Containerfile")
    assert notes[1] == (
        "file: Containerfile line 2: buildah 1.28.2 ignores FROM --platform=$BUILDPLATFORM: "
        "that stage runs for each target platform (under QEMU for a foreign one); "
        "--toolchain debian13 runs it natively")
