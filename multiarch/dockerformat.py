"""`index_format: docker`: the same image, described with Docker's manifest types.

Some registries reject OCI image indexes (and OCI manifests). For them publish describes
the very same blobs with Docker Image Manifest V2 Schema 2 manifests under a Docker
manifest list. The conversion is a pure function on manifest JSON: the config blob and
every layer keep their digest and size, only the media types in the descriptors change,
so nothing but the new manifest bytes has to be pushed.

Only gzip layers have a Docker media type (`rootfs.diff.tar.gzip`, or the `foreign` one
for non-distributable layers, whose `urls` are kept). A zstd or uncompressed layer cannot
be described by schema 2, so the conversion refuses it, before anything is pushed.

Annotations: schema 2 and the manifest list define no `annotations` field. This project
keeps them anyway, in the manifest list (the index annotations: created, source and the
`rebuild: if-changed` fingerprint) and in each manifest (the base image annotations the
provenance reads), because:
- the fingerprint must be readable from the tag in one GET, as for OCI, so that
  `rebuild: if-changed` works unchanged; a label in each config would change the config
  digest (the "same blobs" promise) and a referrer artifact needs the referrers API;
- distribution (docker-registry), containerd, containers/image and Docker decode these
  documents into structs that ignore unknown fields and serve the bytes as pushed.
A registry that validates against a closed schema and refuses the field would refuse the
push with its own error; no tag moves then (publish pushes by digest before any tag).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multiarch.errors import PublishError
from multiarch.oci import LayoutImage, blob_path, digest_hex, link_blob
from multiarch.ocispec import (
    DOCKER_CONFIG,
    DOCKER_FOREIGN_LAYER,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_INDEX,
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_MANIFEST,
    MEDIA_TYPE_NONDISTRIBUTABLE_GZIP,
    sha256_digest,
)

if TYPE_CHECKING:
    from multiarch.platforms import Platform

# OCI (or already Docker) layer type -> the Docker schema 2 type naming the same bytes
LAYER_TYPES = {
    MEDIA_TYPE_LAYER_GZIP: DOCKER_LAYER,
    MEDIA_TYPE_NONDISTRIBUTABLE_GZIP: DOCKER_FOREIGN_LAYER,
    DOCKER_LAYER: DOCKER_LAYER,
    DOCKER_FOREIGN_LAYER: DOCKER_FOREIGN_LAYER,
}
CONFIG_TYPES = {MEDIA_TYPE_CONFIG: DOCKER_CONFIG, DOCKER_CONFIG: DOCKER_CONFIG}

INDEX_FORMATS = {"oci": MEDIA_TYPE_INDEX, "docker": DOCKER_MANIFEST_LIST}


def docker_manifest(manifest: Mapping[str, Any], *, what: str) -> bytes:
    """An OCI image manifest as a Docker V2 schema 2 manifest naming the same blobs.

    `what` names the image in errors (`linux/arm64`). Raises PublishError for a manifest
    that schema 2 cannot describe: a zstd or uncompressed layer, a non-image config.
    """
    kind = manifest.get("mediaType", MEDIA_TYPE_MANIFEST)
    if kind not in (MEDIA_TYPE_MANIFEST, DOCKER_MANIFEST):
        raise PublishError(f"{what}: a {kind} cannot be converted to a Docker manifest")
    config = dict(manifest["config"])
    config_type = config.get("mediaType", "")
    if config_type not in CONFIG_TYPES:
        raise PublishError(f"{what}: its config is a {config_type or 'untyped blob'}, not an "
                           "image config: index_format docker cannot describe it; use oci")
    config["mediaType"] = CONFIG_TYPES[config_type]
    layers = []
    for layer in manifest.get("layers", []):
        layer_type = layer.get("mediaType", "")
        if layer_type not in LAYER_TYPES:
            raise PublishError(
                f"{what}: layer {layer.get('digest')} is {layer_type or 'untyped'}, which a "
                "Docker schema 2 manifest cannot name (only gzip layers): publish with "
                "index_format oci, or export the layers with gzip")
        layers.append({**layer, "mediaType": LAYER_TYPES[layer_type]})
    converted: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": config,
        "layers": layers,
    }
    if manifest.get("annotations"):
        converted["annotations"] = dict(manifest["annotations"])
    return json.dumps(converted, separators=(",", ":")).encode()


def platform_manifest_bytes(oci_bytes: bytes, *, what: str) -> bytes:
    """`docker_manifest` on the exact bytes read from a layout or the registry."""
    try:
        manifest = json.loads(oci_bytes)
    except ValueError as exc:
        raise PublishError(f"{what}: its manifest is not JSON: {exc}") from exc
    return docker_manifest(manifest, what=what)


def converted_images(found: Sequence[tuple[Platform, LayoutImage]], *,
                     manifest_bytes: Callable[[LayoutImage], bytes]
                     ) -> tuple[list[tuple[Platform, LayoutImage]], dict[str, bytes]]:
    """Each platform described by its Docker manifest, and those manifests by digest.

    `manifest_bytes` reads a platform's current manifest (from its layout or the registry).
    The returned images keep their layout and blobs; only the manifest digest, size and
    type are the new manifest's. Every platform is converted before anything is pushed,
    so a layer schema 2 cannot name stops the publish with nothing written.
    """
    images: list[tuple[Platform, LayoutImage]] = []
    manifests: dict[str, bytes] = {}
    for platform, image in found:
        body = platform_manifest_bytes(manifest_bytes(image), what=str(platform))
        digest = sha256_digest(body)
        manifests[digest] = body
        images.append((platform, replace(image, manifest_digest=digest,
                                         manifest_size=len(body), media_type=DOCKER_MANIFEST,
                                         total_size=image.total_size - image.manifest_size
                                         + len(body))))
    return images, manifests


DIR_VERSION = "Directory Transport Version: 1.1\n"  # containers-transports(5), `dir:`


def write_manifest_list_dir(destination: Path, manifest_list: bytes,
                            images: Sequence[LayoutImage], *,
                            manifests: Mapping[str, bytes]) -> str:
    """A skopeo `dir:` directory holding the manifest list, its Docker manifests and, by
    hard link, every platform's blobs; returns the list's digest.

    Not an OCI layout: skopeo's `oci:` transport only finds OCI types in index.json, and
    converting on the way would break `--preserve-digests`. `dir:` takes each manifest's
    type from its own bytes, so `skopeo copy --all --preserve-digests dir:...` pushes the
    exact bytes computed here. Layers and configs are linked as in the OCI case: no copy.
    """
    destination.mkdir(parents=True, exist_ok=True)
    (destination / "version").write_text(DIR_VERSION)
    for image in images:
        assert image.layout is not None, "only layouts are linked into a dir: image"
        for digest in image.blob_digests:
            link_blob(blob_path(image.layout, digest), destination / digest_hex(digest))
    for digest, body in manifests.items():
        (destination / f"{digest_hex(digest)}.manifest.json").write_bytes(body)
    (destination / "manifest.json").write_bytes(manifest_list)
    return sha256_digest(manifest_list)
