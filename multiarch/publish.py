"""Publish: one OCI image index over every platform, pushed by digest, tags last, verified.

Order matters for atomicity. Blobs, platform manifests and the index go up by digest,
untagged, so a failure part-way leaves every existing tag where it was. Only then is each
tag written, and each tag is read back and must resolve to the digest computed here.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from multiarch.errors import PublishError
from multiarch.oci import assemble_index, read_layout_image, write_index_layout
from multiarch.plan import REVISION_LABEL, SOURCE_LABEL, Step
from multiarch.references import ImageReference
from multiarch.registry import RegistryTarget, push_layout, verify_tag
from multiarch.request import BuildRequest
from multiarch.results import BuildResult, PlatformImage, summarise
from multiarch.source import PinnedSource

INDEX_REF = "index"
CREATED_ANNOTATION = "org.opencontainers.image.created"


def index_annotations(source: PinnedSource, *, created: datetime) -> dict[str, str]:
    annotations = {CREATED_ANNOTATION: created.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if source.kind == "git":
        annotations[SOURCE_LABEL] = source.location
    if source.revision:
        annotations[REVISION_LABEL] = source.revision
    return annotations


def publish_request(
    request: BuildRequest,
    source: PinnedSource,
    images: Sequence[PlatformImage],
    *,
    index_dir: Path,
    emit: Callable[[str], None],
    annotations: Mapping[str, str] | None = None,
) -> BuildResult:
    """Publish a request's images under all of its tags."""
    return publish_images(
        images, image=request.image, tags=request.all_tags, source=source,
        index_dir=index_dir, insecure=request.insecure_registry, emit=emit,
        annotations=annotations,
    )


def publish_images(
    images: Sequence[PlatformImage],
    *,
    image: ImageReference,
    tags: Sequence[str],
    source: PinnedSource,
    index_dir: Path,
    insecure: bool,
    emit: Callable[[str], None],
    annotations: Mapping[str, str] | None = None,
) -> BuildResult:
    """Assemble, push and verify; returns the published result or raises PublishError."""
    if not images:
        raise PublishError("no platform images to publish")
    if not tags:
        raise PublishError("no tags to publish")
    found = []
    for built in images:
        layout_image = read_layout_image(Path(built.layout), built.layout_ref)
        if layout_image.manifest_digest != built.digest:
            raise PublishError(
                f"layout of {built.platform} changed since its build "
                f"({layout_image.manifest_digest} != {built.digest})"
            )
        found.append((built.platform, layout_image))
    merged = dict(index_annotations(source, created=datetime.now(UTC)))
    merged.update(annotations or {})
    index = assemble_index(found, annotations=merged)
    digest = write_index_layout(index_dir, index, [img for _, img in found], ref_name=INDEX_REF)
    target = RegistryTarget(name=image.name, insecure=insecure)
    emit(f"[publish] pushing {len(found)} platforms to {image.with_digest(digest)}")
    # By digest first (nothing visible moves), then one tag after another.
    for destination in [image.with_digest(digest), *map(image.with_tag, tags)]:
        push_layout(
            index_dir,
            INDEX_REF,
            destination=destination,
            target=target,
            emit=lambda line: emit(f"[publish] {line}"),
            label="[publish]",
        )
    expected = {str(p): img.manifest_digest for p, img in found}
    for tag in tags:
        verify_tag(
            image.with_tag(tag), expected_digest=digest, expected_manifests=expected, target=target
        )
        emit(f"[publish] verified {image.with_tag(tag)} -> {digest}")
    return BuildResult(
        image=image.name,
        index_digest=digest,
        tags=list(tags),
        platforms=[
            summarise(built, size=layout_image.total_size)
            for built, (_, layout_image) in zip(images, found, strict=True)
        ],
    )


class PublishSpec(BaseModel):
    """Everything a publish step in a pod needs, passed as one argv element (JSON)."""

    model_config = ConfigDict(frozen=True)

    image: ImageReference
    tags: tuple[str, ...]
    insecure: bool
    source: PinnedSource
    images: tuple[PlatformImage, ...]
    index_dir: str
    cleanup_dir: str | None = None  # the run's handoff directory, removed once verified
    annotations: dict[str, str] = {}  # extra index annotations (the rebuild fingerprint)


def publish_spec_step(spec: PublishSpec, *, result_file: str) -> Step:
    """The publish step as a command: the builder image runs `multiarch publish-layouts`."""
    return Step(
        name="publish",
        argv=("multiarch", "publish-layouts", "--spec", spec.model_dump_json(),
              "--result-file", result_file),
    )


def publish_from_spec(spec: PublishSpec, *, emit: Callable[[str], None]) -> BuildResult:
    result = publish_images(
        spec.images, image=spec.image, tags=spec.tags, source=spec.source,
        index_dir=Path(spec.index_dir), insecure=spec.insecure, emit=emit,
        annotations=spec.annotations,
    )
    if spec.cleanup_dir:
        shutil.rmtree(spec.cleanup_dir, ignore_errors=True)
    return result
