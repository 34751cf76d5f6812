"""OCI image layouts and the image index, as bytes we compute and can verify.

The index digest is known before anything is pushed: publish writes these exact bytes
and then checks that the registry serves the same digest under every tag.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multiarch.errors import PublishError
from multiarch.ocispec import (
    IMAGE_MANIFEST_TYPES,
    LAYOUT_FILE_CONTENT,
    MEDIA_TYPE_INDEX,
    MEDIA_TYPE_MANIFEST,
    REF_NAME_ANNOTATION,
    sha256_digest,
)
from multiarch.platforms import Platform


@dataclass(frozen=True, kw_only=True)
class LayoutImage:
    """One platform image, with what the index entry needs: found in an OCI layout, or
    read back from the registry (then `layout` is None)."""

    layout: Path | None
    manifest_digest: str
    manifest_size: int
    media_type: str
    os: str
    architecture: str
    variant: str | None
    total_size: int  # manifest + config + layers, compressed: what a pull transfers
    blob_digests: tuple[str, ...]  # config and layers


def blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest_hex(digest, where=f" in {layout}")


def digest_hex(digest: str, *, where: str = "") -> str:
    """The hex of a sha256 digest, the only kind a blob here may have; PublishError else."""
    algorithm, _, hexpart = digest.partition(":")
    if algorithm != "sha256" or len(hexpart) != 64:
        raise PublishError(f"unsupported or malformed digest {digest!r}{where}")
    return hexpart


def read_blob_json(layout: Path, digest: str) -> dict[str, Any]:
    path = blob_path(layout, digest)
    data = path.read_bytes()
    if sha256_digest(data) != digest:
        raise PublishError(
            f"blob {digest} in {layout} does not match its digest: the layout "
            "is corrupt, rebuild this platform"
        )
    return json.loads(data)


def read_layout_image(layout: Path, ref_name: str) -> LayoutImage:
    """Find the image tagged `ref_name` in a layout and read its config's platform."""
    try:
        index = json.loads((layout / "index.json").read_text())
    except FileNotFoundError as exc:
        raise PublishError(f"no OCI layout at {layout}: the export step did not run") from exc
    entries = [
        m
        for m in index.get("manifests", [])
        if m.get("annotations", {}).get(REF_NAME_ANNOTATION) == ref_name
    ]
    if len(entries) != 1:
        raise PublishError(f"layout {layout} has {len(entries)} images named {ref_name!r}, not 1")
    entry = entries[0]
    if entry.get("mediaType") not in IMAGE_MANIFEST_TYPES:
        raise PublishError(f"{layout}:{ref_name} is a {entry.get('mediaType')}, not an image")
    manifest = read_blob_json(layout, entry["digest"])
    config_desc = manifest["config"]
    config = read_blob_json(layout, config_desc["digest"])
    image = platform_image(manifest, config, layout=layout, digest=entry["digest"],
                           size=int(entry["size"]), media_type=entry["mediaType"])
    for digest in image.blob_digests:
        if not blob_path(layout, digest).is_file():
            raise PublishError(f"blob {digest} is missing from {layout}")
    return image


def platform_image(manifest: Mapping[str, Any], config: Mapping[str, Any], *,
                   layout: Path | None, digest: str, size: int, media_type: str) -> LayoutImage:
    """What an index entry needs from one image's manifest and config, wherever they were
    read (a layout, or the registry)."""
    blobs = [manifest["config"], *manifest.get("layers", [])]
    return LayoutImage(
        layout=layout,
        manifest_digest=digest,
        manifest_size=size,
        media_type=media_type,
        os=config.get("os", ""),
        architecture=config.get("architecture", ""),
        variant=config.get("variant") or None,
        total_size=size + sum(int(b["size"]) for b in blobs),
        blob_digests=tuple(b["digest"] for b in blobs),
    )


def index_platform(image: LayoutImage, requested: Platform) -> dict[str, str]:
    """The index entry's platform, read from the image config and checked against the request.

    A Containerfile whose FROM pins another architecture would otherwise publish an
    amd64 image under an arm64 entry.
    """
    if (image.os, image.architecture) != (requested.os, requested.architecture):
        raise PublishError(
            f"the image built for {requested} says it is {image.os}/{image.architecture} in its "
            "config: check that FROM does not pin a platform"
        )
    wanted_variant = requested.index_variant
    if image.variant and wanted_variant and image.variant != wanted_variant:
        raise PublishError(
            f"the image built for {requested} has variant {image.variant} in its config, "
            f"not {wanted_variant}: check the base image's variant"
        )
    platform = {"architecture": image.architecture, "os": image.os}
    if image.variant:  # the config's, or none: an entry and its config never disagree
        platform["variant"] = image.variant
    return platform


def assemble_index(
    images: Sequence[tuple[Platform, LayoutImage]],
    *,
    annotations: Mapping[str, str],
    media_type: str = MEDIA_TYPE_INDEX,
) -> bytes:
    """Serialise the image index: entries in request order, compact JSON, stable bytes.

    `media_type`: an OCI index, or a Docker manifest list (multiarch.dockerformat) over
    Docker manifests; the two have the same shape.
    """
    if not images:
        raise PublishError("refusing to assemble an image index with no platforms")
    seen: set[str] = set()
    manifests = []
    for requested, image in images:
        if str(requested) in seen:
            raise PublishError(f"platform {requested} appears twice in the index")
        seen.add(str(requested))
        manifests.append(
            {
                "mediaType": image.media_type,
                "digest": image.manifest_digest,
                "size": image.manifest_size,
                "platform": index_platform(image, requested),
            }
        )
    index: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": manifests,
    }
    if annotations:
        index["annotations"] = dict(sorted(annotations.items()))
    return json.dumps(index, separators=(",", ":")).encode()


def write_index_layout(
    destination: Path,
    index: bytes,
    images: Sequence[LayoutImage],
    *,
    ref_name: str,
) -> str:
    """Make an OCI layout holding the index and, by hard link, every platform's blobs.

    Hard links cost no image data; where the file system refuses them (another device)
    a relative symlink does the same job for skopeo, which opens blobs by path.
    """
    blobs = destination / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (destination / "oci-layout").write_text(LAYOUT_FILE_CONTENT)
    for image in images:
        assert image.layout is not None, "only layouts are linked into an index layout"
        for digest in (image.manifest_digest, *image.blob_digests):
            link_blob(blob_path(image.layout, digest), blob_path(destination, digest))
    digest = sha256_digest(index)
    blob_path(destination, digest).write_bytes(index)
    entry = {
        "mediaType": MEDIA_TYPE_INDEX,
        "digest": digest,
        "size": len(index),
        "annotations": {REF_NAME_ANNOTATION: ref_name},
    }
    (destination / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "manifests": [entry]}, separators=(",", ":"))
    )
    return digest


def layout_from_dir(directory: Path, destination: Path, *, ref_name: str) -> None:
    """A containers `dir:` copy (manifest.json, blobs named by hex) as an OCI layout, by
    hard links: the manifest exactly as pulled, an OCI or a Docker one, never converted
    (a `skopeo copy` into `oci:` would rewrite a Docker config without its HEALTHCHECK)."""
    blobs = destination / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (destination / "oci-layout").write_text(LAYOUT_FILE_CONTENT)
    manifest = (directory / "manifest.json").read_bytes()
    for path in directory.iterdir():
        if path.name not in ("manifest.json", "version"):
            link_blob(path, blobs / path.name)
    digest = sha256_digest(manifest)
    blob_path(destination, digest).write_bytes(manifest)
    entry = {
        "mediaType": json.loads(manifest).get("mediaType", MEDIA_TYPE_MANIFEST),
        "digest": digest,
        "size": len(manifest),
        "annotations": {REF_NAME_ANNOTATION: ref_name},
    }
    (destination / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "manifests": [entry]}, separators=(",", ":")))


def link_blob(source: Path, target: Path) -> None:
    """Hard link, else a relative symlink; an existing target is kept."""
    if target.exists():
        return
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        target.symlink_to(os.path.relpath(source, target.parent))


def layout_bytes(layout: Path) -> int:
    """Bytes on disk under a layout, counting each hard-linked file once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for path in layout.rglob("*"):
        info = path.lstat()
        if path.is_file() and (info.st_dev, info.st_ino) not in seen:
            seen.add((info.st_dev, info.st_ino))
            total += info.st_size
    return total
