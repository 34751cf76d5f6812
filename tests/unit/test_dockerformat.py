"""index_format docker: OCI manifests described again with Docker's types, same blobs."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from multiarch.dockerformat import (
    converted_images,
    docker_manifest,
    write_manifest_list_dir,
)
from multiarch.errors import PublishError
from multiarch.oci import assemble_index, blob_path, read_layout_image
from multiarch.ocispec import (
    DOCKER_CONFIG,
    DOCKER_FOREIGN_LAYER,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_MANIFEST,
)
from multiarch.platforms import Platform
from multiarch.request import BuildRequest
from tests.unit.test_oci import make_layout

GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
TAR = "application/vnd.oci.image.layer.v1.tar"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def oci_manifest(*layer_types: str) -> dict[str, Any]:
    """What skopeo's export writes: an OCI manifest, gzip layers, buildah's annotations."""
    return {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": {"mediaType": MEDIA_TYPE_CONFIG, "digest": digest_of(b"config"), "size": 6},
        "layers": [{"mediaType": kind, "digest": digest_of(kind.encode() + bytes([n])),
                    "size": 1000 + n} for n, kind in enumerate(layer_types)],
        "annotations": {"org.opencontainers.image.base.name": "busybox:1.36"},
    }


def test_a_manifest_names_the_same_config_and_layers_with_docker_types() -> None:
    oci = oci_manifest(GZIP, GZIP)
    converted = json.loads(docker_manifest(oci, what="linux/arm64"))
    assert converted["schemaVersion"] == 2
    assert converted["mediaType"] == DOCKER_MANIFEST
    assert converted["config"] == {**oci["config"], "mediaType": DOCKER_CONFIG}
    assert [layer["mediaType"] for layer in converted["layers"]] == [DOCKER_LAYER] * 2
    assert [(x["digest"], x["size"]) for x in converted["layers"]] == \
        [(x["digest"], x["size"]) for x in oci["layers"]]
    # the base annotations the provenance reads stay with the manifest
    assert converted["annotations"] == oci["annotations"]


def test_a_non_distributable_layer_becomes_a_foreign_layer_with_its_urls() -> None:
    oci = oci_manifest(GZIP)
    oci["layers"].append({"mediaType": "application/vnd.oci.image.layer.nondistributable.v1"
                          ".tar+gzip", "digest": digest_of(b"win"), "size": 9,
                          "urls": ["https://example.invalid/layer"]})
    foreign = json.loads(docker_manifest(oci, what="windows/amd64"))["layers"][1]
    assert foreign == {**oci["layers"][1], "mediaType": DOCKER_FOREIGN_LAYER}


@pytest.mark.parametrize("kind", [ZSTD, TAR])
def test_a_layer_schema2_cannot_name_is_refused_naming_platform_layer_and_fix(kind) -> None:
    oci = oci_manifest(GZIP, kind)
    with pytest.raises(PublishError) as info:
        docker_manifest(oci, what="linux/arm64")
    message = str(info.value)
    assert message.startswith("linux/arm64: layer " + oci["layers"][1]["digest"])
    assert kind in message and "index_format oci" in message


def test_an_artifact_is_not_an_image_and_is_refused() -> None:
    oci = oci_manifest(GZIP)
    oci["config"]["mediaType"] = "application/vnd.oci.empty.v1+json"
    with pytest.raises(PublishError, match="not an image config"):
        docker_manifest(oci, what="linux/amd64")


def two_platforms(tmp_path: Path) -> list:
    make_layout(tmp_path / "amd64", architecture="amd64", layer=b"shared layer")
    make_layout(tmp_path / "arm64", architecture="arm64", variant="v8", layer=b"shared layer")
    return [(Platform.parse("linux/amd64"), read_layout_image(tmp_path / "amd64", "image")),
            (Platform.parse("linux/arm64"), read_layout_image(tmp_path / "arm64", "image"))]


def read_from_layout(image) -> bytes:
    return blob_path(image.layout, image.manifest_digest).read_bytes()


def test_converted_platforms_keep_their_blobs_under_new_manifest_digests(tmp_path) -> None:
    found = two_platforms(tmp_path)
    converted, manifests = converted_images(found, manifest_bytes=read_from_layout)
    for (_, before), (_, after) in zip(found, converted, strict=True):
        body = manifests[after.manifest_digest]
        assert digest_of(body) == after.manifest_digest != before.manifest_digest
        assert after.manifest_size == len(body)
        assert after.media_type == DOCKER_MANIFEST
        assert after.blob_digests == before.blob_digests
        assert after.layout == before.layout
        assert after.total_size - after.manifest_size == \
            before.total_size - before.manifest_size


def test_the_manifest_list_has_the_index_shape_with_docker_types(tmp_path) -> None:
    converted, manifests = converted_images(two_platforms(tmp_path),
                                            manifest_bytes=read_from_layout)
    listing = json.loads(assemble_index(converted, annotations={"k": "v"},
                                        media_type=DOCKER_MANIFEST_LIST))
    assert listing["schemaVersion"] == 2
    assert listing["mediaType"] == DOCKER_MANIFEST_LIST
    assert [(e["mediaType"], e["digest"], e["platform"]) for e in listing["manifests"]] == [
        (DOCKER_MANIFEST, converted[0][1].manifest_digest,
         {"architecture": "amd64", "os": "linux"}),
        (DOCKER_MANIFEST, converted[1][1].manifest_digest,
         {"architecture": "arm64", "os": "linux", "variant": "v8"}),
    ]
    assert set(manifests) == {e["digest"] for e in listing["manifests"]}
    assert listing["annotations"] == {"k": "v"}  # where if-changed reads its fingerprint


def test_skopeo_copies_the_dir_image_with_every_digest_kept(tmp_path) -> None:
    converted, manifests = converted_images(two_platforms(tmp_path / "layouts"),
                                            manifest_bytes=read_from_layout)
    listing = assemble_index(converted, annotations={}, media_type=DOCKER_MANIFEST_LIST)
    source = tmp_path / "dir"
    digest = write_manifest_list_dir(source, listing, [img for _, img in converted],
                                     manifests=manifests)
    layer = converted[0][1].blob_digests[1]
    assert (source / layer.removeprefix("sha256:")).stat().st_ino == \
        blob_path(converted[0][1].layout, layer).stat().st_ino  # linked, not copied
    copy = tmp_path / "copy"
    subprocess.run(["skopeo", "copy", "--quiet", "--all", "--preserve-digests",
                    f"dir:{source}", f"dir:{copy}"], check=True, timeout=60)
    assert digest_of((copy / "manifest.json").read_bytes()) == digest
    for made, body in manifests.items():
        assert (copy / f"{made.removeprefix('sha256:')}.manifest.json").read_bytes() == body


def test_index_format_defaults_to_oci_and_names_itself_when_wrong(tmp_path) -> None:
    (tmp_path / "Containerfile").write_text("FROM scratch\n")
    fields = {"image": "registry.example/app", "platforms": ["linux/amd64"],
              "context": str(tmp_path)}
    assert BuildRequest(**fields).index_format == "oci"
    assert BuildRequest(**fields, index_format="docker").index_format == "docker"
    with pytest.raises(ValueError, match="index_format"):
        BuildRequest(**fields, index_format="v2s2")
