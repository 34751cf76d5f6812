"""Containerfiles as projects write them, built with `toolchain: debian13` (buildah 1.39 from
the cached trixie rootfs) through the whole build and publish, on both platforms (arm64
under QEMU), and read back from the registry: heredocs in RUN and COPY, `ADD --checksum`,
`RUN --network=none`, `COPY --chmod`, multi-stage with `COPY --from`, ARG in FROM and an
ignore file. The host's buildah 1.28 refuses the same Containerfile before any build.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from multiarch.errors import ConfigurationError
from multiarch.orchestrate import build_and_publish
from multiarch.partial import PlatformsFailed
from multiarch.request import BuildRequest, RunnerOptions

pytestmark = pytest.mark.integration

PAYLOAD = b"fetched by ADD --checksum\n"

MODERN = """\
ARG BASE
FROM ${{BASE}} AS tools
RUN <<EOF
set -e
uname -m > /built-arch
echo "written by a RUN heredoc" >> /built-arch
EOF

FROM ${{BASE}}
COPY <<EOF /etc/greeting
hello from COPY <<EOF
EOF
COPY --chmod=0755 run.sh /usr/local/bin/run.sh
COPY --from=tools /built-arch /built-arch
ADD --checksum=sha256:{checksum} {url} /payload.txt
RUN --network=none sh -c 'tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " " > /netdevs'
RUN sh -c 'tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " " > /netdevs-default'
COPY . /ctx
"""


class _Quiet:
    def info(self, msg: str, /) -> None:
        pass


@pytest.fixture
def payload_url() -> Iterator[str]:
    """PAYLOAD over plain HTTP on 127.0.0.1 (buildah fetches ADD URLs itself, on the host)."""

    class Payload(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Payload)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/payload.txt"
    finally:
        server.shutdown()
        server.server_close()


def modern_context(root: Path, url: str, checksum: str) -> Path:
    context = root / "app"
    (context / "ignored").mkdir(parents=True)
    (context / "Containerfile").write_text(MODERN.format(checksum=checksum, url=url))
    (context / "run.sh").write_text("#!/bin/sh\necho run\n")
    (context / "run.sh").chmod(0o600)  # COPY --chmod sets 0755 whatever the file has
    (context / "kept.txt").write_text("kept\n")
    (context / "ignored" / "notes.txt").write_text("must not ship\n")
    (context / ".containerignore").write_text("ignored/\n")
    return context


def request(playground, context: Path, work: Path, toolchain: str, tag: str) -> BuildRequest:
    return BuildRequest(
        image=f"{playground.address}/tests/modern:{tag}", platforms=["linux/amd64", "linux/arm64"],
        context=str(context), build_args={"BASE": playground.base}, allow_emulation=True,
        insecure_registry=True, supply_chain={"sbom": False, "provenance": False},
        runner=RunnerOptions(work_dir=str(work), toolchain=toolchain))


def pulled_files(reference: str, scratch: Path) -> dict[str, tuple[int, bytes]]:
    """Every regular file of a pushed image: path -> (mode, content), the top layer winning."""
    layout = scratch / "pulled"
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                    f"docker://{reference}", f"oci:{layout}:pulled"],
                   check=True, capture_output=True, timeout=120)

    def blob(digest: str) -> Path:
        return layout / "blobs" / "sha256" / digest.split(":", 1)[1]

    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
    files: dict[str, tuple[int, bytes]] = {}
    for layer in reversed(manifest["layers"]):
        with tarfile.open(blob(layer["digest"])) as tar:
            for member in tar.getmembers():
                name = "/" + member.name.lstrip("./")
                if member.isfile() and name not in files:
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    files[name] = (member.mode, extracted.read())
    return files


def test_modern_containerfile_builds_on_both_platforms_with_the_debian13_toolchain(
        playground, tmp_path, payload_url):
    context = modern_context(tmp_path, payload_url, hashlib.sha256(PAYLOAD).hexdigest())
    work = tmp_path / "work"
    result = build_and_publish(request(playground, context, work, "debian13", "1"), log=_Quiet())
    assert {image.builder for image in result.platforms} == {
        next(image.builder for image in result.platforms)}
    assert "buildah 1.39." in result.platforms[0].builder
    assert "(Debian 13 toolchain)" in result.platforms[0].builder
    for image in result.platforms:
        arch = image.platform.architecture
        machine = {"amd64": "x86_64", "arm64": "aarch64"}[arch]
        scratch = tmp_path / arch
        scratch.mkdir()
        files = pulled_files(f"{playground.address}/tests/modern@{image.digest}", scratch)
        assert files["/built-arch"][1] == f"{machine}\nwritten by a RUN heredoc\n".encode()
        assert files["/etc/greeting"][1] == b"hello from COPY <<EOF\n"
        assert files["/usr/local/bin/run.sh"][0] & 0o7777 == 0o755
        assert files["/payload.txt"][1] == PAYLOAD
        # --network=none: only the loopback device; the default network has an eth0 too
        assert files["/netdevs"][1].split() == [b"lo"]
        assert b"eth0" in files["/netdevs-default"][1].split()
        assert "/ctx/kept.txt" in files and "/ctx/run.sh" in files
        assert not [name for name in files if name.startswith("/ctx/ignored")]
    assert str(work) not in Path("/proc/self/mountinfo").read_text()  # no mount left behind


def test_a_wrong_add_checksum_fails_the_build_and_publishes_nothing(
        playground, tmp_path, payload_url):
    context = modern_context(tmp_path, payload_url, "0" * 64)
    with pytest.raises(PlatformsFailed, match=r"nothing was published.*ADD --checksum.*"
                       r"unexpected response digest"):
        build_and_publish(request(playground, context, tmp_path / "work", "debian13", "bad"),
                          log=_Quiet())
    tags = subprocess.run(["skopeo", "list-tags", "--tls-verify=false",
                           f"docker://{playground.address}/tests/modern"],
                          capture_output=True, text=True, check=False).stdout
    assert '"bad"' not in tags


def test_the_host_buildah_refuses_it_before_any_build_naming_the_toolchain(playground,
                                                                            tmp_path):
    context = modern_context(tmp_path, "http://127.0.0.1:9/payload.txt", "0" * 64)
    work = tmp_path / "work"
    with pytest.raises(ConfigurationError) as refused:
        build_and_publish(request(playground, context, work, "host", "host"), log=_Quiet())
    message = str(refused.value)
    assert "line 3: heredocs (<<EOF) needs buildah 1.35.0 or later" in message
    assert "--toolchain debian13" in message
    assert not (work / "builds").exists()


CROSS = """\
ARG BASE
FROM --platform=$BUILDPLATFORM ${BASE} AS build
ARG BUILDPLATFORM
ARG BUILDOS
ARG BUILDARCH
ARG TARGETARCH
RUN echo "$BUILDPLATFORM $BUILDOS $BUILDARCH for $TARGETARCH on $(uname -m)" > /cross
FROM --platform=$TARGETPLATFORM ${BASE}
COPY --from=build /cross /cross
RUN uname -m > /final-arch
"""


def test_a_build_platform_stage_runs_natively_and_each_final_stage_is_its_platform(
        playground, tmp_path):
    context = tmp_path / "cross"
    context.mkdir()
    (context / "Containerfile").write_text(CROSS)
    result = build_and_publish(request(playground, context, tmp_path / "work", "debian13",
                                       "cross"), log=_Quiet())
    for image in result.platforms:
        arch = image.platform.architecture
        scratch = tmp_path / arch
        scratch.mkdir()
        files = pulled_files(f"{playground.address}/tests/modern@{image.digest}", scratch)
        # the cross stage ran natively on this amd64 host, told what it builds for
        assert files["/cross"][1] == f"linux/amd64 linux amd64 for {arch} on x86_64\n".encode()
        machine = {"amd64": "x86_64", "arm64": "aarch64"}[arch]
        assert files["/final-arch"][1] == f"{machine}\n".encode()


def test_a_later_from_of_the_build_platform_image_is_refused_before_any_build(
        playground, tmp_path):
    """buildah 1.39 (issue 4742) would give the arm64 image the amd64 base: never publish it."""
    context = tmp_path / "cross"
    context.mkdir()
    (context / "Containerfile").write_text(
        CROSS.replace("FROM --platform=$TARGETPLATFORM ${BASE}", "FROM ${BASE}"))
    work = tmp_path / "work"
    with pytest.raises(ConfigurationError, match=r"line 8: FROM .*\(buildah issue 4742\).*"
                       r"write FROM --platform=\$TARGETPLATFORM"):
        build_and_publish(request(playground, context, work, "debian13", "wrong"),
                          log=_Quiet())
    assert not (work / "builds").exists()
