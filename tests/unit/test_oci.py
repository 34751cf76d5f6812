"""Unit tests for OCI layouts and the image index, on tiny layouts with real blobs."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from multiarch.errors import PublishError
from multiarch.oci import (
    LayoutImage,
    assemble_index,
    layout_bytes,
    read_blob_json,
    read_layout_image,
    write_index_layout,
)
from multiarch.ocispec import MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST
from multiarch.platforms import Platform

REF = "image"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put_blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = digest_of(data)
    path = layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def make_layout(
    layout: Path,
    *,
    architecture: str,
    variant: str | None = None,
    os_name: str = "linux",
    layer: bytes | None = None,
    ref_name: str = REF,
    media_type: str = MEDIA_TYPE_MANIFEST,
) -> dict[str, Any]:
    """Write a one-image OCI layout; return the descriptors written."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    config_doc: dict[str, Any] = {"architecture": architecture, "os": os_name, "rootfs": {}}
    if variant:
        config_doc["variant"] = variant
    config = put_blob(layout, json.dumps(config_doc).encode())
    layer_desc = put_blob(layout, layer or f"layer for {architecture}{variant}".encode())
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer_desc}],
    }
    manifest = put_blob(layout, json.dumps(manifest_doc).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": media_type,
                **manifest,
                "annotations": {"org.opencontainers.image.ref.name": ref_name},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return {"config": config, "layer": layer_desc, "manifest": manifest}


def blob_file(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


@pytest.fixture
def amd64(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    layout = tmp_path / "linux-amd64"
    return layout, make_layout(layout, architecture="amd64")


@pytest.fixture
def arm64(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    layout = tmp_path / "linux-arm64"
    return layout, make_layout(layout, architecture="arm64", variant="v8")


# --- reading a layout ------------------------------------------------------------------


def test_read_layout_image(amd64: tuple[Path, dict[str, Any]]) -> None:
    layout, written = amd64
    image = read_layout_image(layout, REF)
    assert image == LayoutImage(
        layout=layout,
        manifest_digest=written["manifest"]["digest"],
        manifest_size=written["manifest"]["size"],
        media_type=MEDIA_TYPE_MANIFEST,
        os="linux",
        architecture="amd64",
        variant=None,
        total_size=sum(written[k]["size"] for k in ("manifest", "config", "layer")),
        blob_digests=(written["config"]["digest"], written["layer"]["digest"]),
    )


def test_read_layout_image_variant(tmp_path: Path) -> None:
    make_layout(tmp_path, architecture="arm", variant="v6")
    image = read_layout_image(tmp_path, REF)
    assert (image.os, image.architecture, image.variant) == ("linux", "arm", "v6")


def test_read_layout_image_missing_layout(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="no OCI layout at"):
        read_layout_image(tmp_path / "nothing", REF)


def test_read_layout_image_wrong_ref_name(amd64: tuple[Path, dict[str, Any]]) -> None:
    layout, _ = amd64
    with pytest.raises(PublishError, match="has 0 images named 'other'"):
        read_layout_image(layout, "other")


def test_read_layout_image_not_an_image(tmp_path: Path) -> None:
    make_layout(tmp_path, architecture="amd64", media_type=MEDIA_TYPE_INDEX)
    with pytest.raises(PublishError, match="not an image"):
        read_layout_image(tmp_path, REF)


def test_read_layout_image_missing_layer(amd64: tuple[Path, dict[str, Any]]) -> None:
    layout, written = amd64
    blob_file(layout, written["layer"]["digest"]).unlink()
    with pytest.raises(PublishError, match="is missing from"):
        read_layout_image(layout, REF)


def test_read_layout_image_corrupt_config(amd64: tuple[Path, dict[str, Any]]) -> None:
    layout, written = amd64
    blob_file(layout, written["config"]["digest"]).write_text('{"architecture":"arm64"}')
    with pytest.raises(PublishError, match="does not match its digest"):
        read_layout_image(layout, REF)


def test_read_blob_json(amd64: tuple[Path, dict[str, Any]]) -> None:
    layout, written = amd64
    assert read_blob_json(layout, written["config"]["digest"])["architecture"] == "amd64"


def test_read_blob_json_detects_corruption(amd64: tuple[Path, dict[str, Any]]) -> None:
    layout, written = amd64
    path = blob_file(layout, written["manifest"]["digest"])
    path.write_bytes(path.read_bytes() + b" ")  # still valid JSON, different bytes
    with pytest.raises(PublishError, match="is corrupt"):
        read_blob_json(layout, written["manifest"]["digest"])


@pytest.mark.parametrize("digest", ["md5:abc", "sha256:abc", "sha256:" + "0" * 63])
def test_read_blob_json_rejects_malformed_digest(tmp_path: Path, digest: str) -> None:
    with pytest.raises(PublishError, match="malformed digest"):
        read_blob_json(tmp_path, digest)


# --- the index -------------------------------------------------------------------------


def test_assemble_index_exact_bytes(
    amd64: tuple[Path, dict[str, Any]], arm64: tuple[Path, dict[str, Any]]
) -> None:
    amd = read_layout_image(amd64[0], REF)
    arm = read_layout_image(arm64[0], REF)
    index = assemble_index(
        [(Platform.parse("linux/arm64"), arm), (Platform.parse("linux/amd64"), amd)],
        annotations={"z.last": "2", "a.first": "1"},
    )
    expected = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_INDEX,
        "manifests": [
            {
                "mediaType": MEDIA_TYPE_MANIFEST,
                "digest": arm.manifest_digest,
                "size": arm.manifest_size,
                "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
            },
            {
                "mediaType": MEDIA_TYPE_MANIFEST,
                "digest": amd.manifest_digest,
                "size": amd.manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
            },
        ],
        "annotations": {"a.first": "1", "z.last": "2"},
    }
    assert index == json.dumps(expected, separators=(",", ":")).encode()
    assert b" " not in index and b"\n" not in index


def test_assemble_index_follows_request_order(
    amd64: tuple[Path, dict[str, Any]], arm64: tuple[Path, dict[str, Any]]
) -> None:
    amd = read_layout_image(amd64[0], REF)
    arm = read_layout_image(arm64[0], REF)
    pairs = [(Platform.parse("linux/amd64"), amd), (Platform.parse("linux/arm64"), arm)]
    forward = json.loads(assemble_index(pairs, annotations={}))
    backward = json.loads(assemble_index(pairs[::-1], annotations={}))
    assert [m["digest"] for m in forward["manifests"]] == [amd.manifest_digest, arm.manifest_digest]
    assert [m["digest"] for m in backward["manifests"]] == [
        arm.manifest_digest,
        amd.manifest_digest,
    ]
    assert "annotations" not in forward


def test_assemble_index_digest_is_stable(
    amd64: tuple[Path, dict[str, Any]], arm64: tuple[Path, dict[str, Any]]
) -> None:
    amd = read_layout_image(amd64[0], REF)
    arm = read_layout_image(arm64[0], REF)
    pairs = [(Platform.parse("linux/amd64"), amd), (Platform.parse("linux/arm64"), arm)]
    first = assemble_index(pairs, annotations={"b": "2", "a": "1", "c": "3"})
    second = assemble_index(pairs, annotations={"c": "3", "a": "1", "b": "2"})
    assert digest_of(first) == digest_of(second)


def test_assemble_index_keeps_config_variant(tmp_path: Path) -> None:
    make_layout(tmp_path, architecture="arm", variant="v6")
    image = read_layout_image(tmp_path, REF)
    entry = json.loads(assemble_index([(Platform.parse("linux/arm/v6"), image)], annotations={}))
    assert entry["manifests"][0]["platform"] == {
        "architecture": "arm",
        "os": "linux",
        "variant": "v6",
    }


def test_an_entry_never_claims_a_variant_its_config_lacks(tmp_path: Path) -> None:
    """crane validate: `mismatched Variant:  != v8` for an entry that adds one."""
    make_layout(tmp_path, architecture="arm64")
    image = read_layout_image(tmp_path, REF)
    entry = json.loads(assemble_index([(Platform.parse("linux/arm64"), image)], annotations={}))
    assert entry["manifests"][0]["platform"] == {"architecture": "arm64", "os": "linux"}


def test_assemble_index_refuses_empty() -> None:
    with pytest.raises(PublishError, match="no platforms"):
        assemble_index([], annotations={})


def test_assemble_index_refuses_duplicates(amd64: tuple[Path, dict[str, Any]]) -> None:
    amd = read_layout_image(amd64[0], REF)
    with pytest.raises(PublishError, match="appears twice"):
        assemble_index(
            [(Platform.parse("linux/amd64"), amd), (Platform.parse("linux/x86_64"), amd)],
            annotations={},
        )


def test_assemble_index_refuses_wrong_architecture(amd64: tuple[Path, dict[str, Any]]) -> None:
    amd = read_layout_image(amd64[0], REF)
    with pytest.raises(PublishError) as info:
        assemble_index([(Platform.parse("linux/arm64"), amd)], annotations={})
    assert "built for linux/arm64 says it is linux/amd64" in str(info.value)


def test_assemble_index_refuses_wrong_variant(tmp_path: Path) -> None:
    make_layout(tmp_path, architecture="arm", variant="v6")
    image = read_layout_image(tmp_path, REF)
    with pytest.raises(PublishError, match="has variant v6 in its config, not v7"):
        assemble_index([(Platform.parse("linux/arm/v7"), image)], annotations={})


# --- the index layout ------------------------------------------------------------------


def test_write_index_layout(
    tmp_path: Path, amd64: tuple[Path, dict[str, Any]], arm64: tuple[Path, dict[str, Any]]
) -> None:
    amd = read_layout_image(amd64[0], REF)
    arm = read_layout_image(arm64[0], REF)
    index = assemble_index(
        [(Platform.parse("linux/amd64"), amd), (Platform.parse("linux/arm64"), arm)],
        annotations={"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    )
    destination = tmp_path / "index-layout"
    digest = write_index_layout(destination, index, [amd, arm], ref_name="1.0")

    assert digest == digest_of(index)
    index_blob = blob_file(destination, digest)
    assert index_blob.read_bytes() == index
    assert digest_of(index_blob.read_bytes()) == digest
    assert json.loads((destination / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert json.loads((destination / "index.json").read_text()) == {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": MEDIA_TYPE_INDEX,
                "digest": digest,
                "size": len(index),
                "annotations": {"org.opencontainers.image.ref.name": "1.0"},
            }
        ],
    }
    for image in (amd, arm):
        for blob in (image.manifest_digest, *image.blob_digests):
            source = blob_file(image.layout, blob)
            target = blob_file(destination, blob)
            assert not target.is_symlink()
            assert os.stat(target).st_ino == os.stat(source).st_ino
            assert os.stat(target).st_dev == os.stat(source).st_dev
    expected = {digest.removeprefix("sha256:")}
    for image in (amd, arm):
        expected |= {
            d.removeprefix("sha256:") for d in (image.manifest_digest, *image.blob_digests)
        }
    assert {p.name for p in (destination / "blobs" / "sha256").iterdir()} == expected


def test_write_index_layout_shared_blob_and_rewrite(tmp_path: Path) -> None:
    shared_layer = b"the same base layer"
    make_layout(tmp_path / "a", architecture="amd64", layer=shared_layer)
    make_layout(tmp_path / "b", architecture="arm64", layer=shared_layer)
    amd = read_layout_image(tmp_path / "a", REF)
    arm = read_layout_image(tmp_path / "b", REF)
    index = assemble_index(
        [(Platform.parse("linux/amd64"), amd), (Platform.parse("linux/arm64"), arm)],
        annotations={},
    )
    destination = tmp_path / "out"
    first = write_index_layout(destination, index, [amd, arm], ref_name="x")
    again = write_index_layout(destination, index, [amd, arm], ref_name="x")
    assert first == again
    assert blob_file(destination, digest_of(shared_layer)).read_bytes() == shared_layer


# --- disk usage ------------------------------------------------------------------------


def test_layout_bytes_counts_hard_links_once(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"x" * 100)
    os.link(tmp_path / "a.bin", tmp_path / "sub" / "a-link.bin")
    (tmp_path / "sub" / "c.bin").write_bytes(b"y" * 10)
    assert layout_bytes(tmp_path) == 110


def test_layout_bytes_of_index_layout(
    tmp_path: Path, amd64: tuple[Path, dict[str, Any]], arm64: tuple[Path, dict[str, Any]]
) -> None:
    amd = read_layout_image(amd64[0], REF)
    arm = read_layout_image(arm64[0], REF)
    index = assemble_index(
        [(Platform.parse("linux/amd64"), amd), (Platform.parse("linux/arm64"), arm)],
        annotations={},
    )
    destination = tmp_path / "out"
    write_index_layout(destination, index, [amd, arm], ref_name="x")
    files = [
        destination / "oci-layout",
        destination / "index.json",
        blob_file(destination, digest_of(index)),
    ]
    expected = sum(p.stat().st_size for p in files) + amd.total_size + arm.total_size
    assert layout_bytes(destination) == expected
    # The whole tree holds each platform blob twice by name but once on disk.
    both = layout_bytes(tmp_path)
    assert both == (
        layout_bytes(destination)
        + sum(p.stat().st_size for p in (amd64[0] / "oci-layout", amd64[0] / "index.json"))
        + sum(p.stat().st_size for p in (arm64[0] / "oci-layout", arm64[0] / "index.json"))
    )
