"""Publish: one OCI image index over every platform, pushed by digest, tags last, verified.

With `index_format: docker` the index is a Docker manifest list over Docker schema 2
manifests of the same blobs (multiarch.dockerformat), converted here before anything is
pushed; the rest (tags, checks, attestations) is the same for both formats.

Order matters for atomicity. Blobs, platform manifests and the index go up by digest,
untagged (skopeo), so a failure part-way leaves every existing tag where it was. Only then
are the tags written, all or nothing: what each tag holds is recorded, each tag gets the
exact bytes of the pushed index (a manifest PUT, nothing re-uploaded), and if one cannot
be written the others are put back. Each tag is then read back and must resolve to the
digest computed here.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from multiarch.attest import SupplyChainPlan, attach_supply_chain
from multiarch.dockerformat import INDEX_FORMATS, converted_images
from multiarch.errors import MultiarchError, PublishError
from multiarch.handoff import handoff_named
from multiarch.oci import LayoutImage, assemble_index, blob_path
from multiarch.ocispec import (
    CREATED_ANNOTATION,
    REVISION_LABEL,
    SOURCE_LABEL,
    sha256_digest,
)
from multiarch.process import Step
from multiarch.references import ImageReference
from multiarch.registry import check_served
from multiarch.registry_api import (
    Manifest,
    RegistryClient,
    delete_manifest,
    put_manifest,
    read_manifest,
    registry_client,
    retrying,
)
from multiarch.request import BuildRequest, IndexFormat
from multiarch.results import Attestation, BuildResult, PlatformImage, summarise
from multiarch.signals import signals_held
from multiarch.source import PinnedSource
from multiarch.tagjournal import write_journal


def index_annotations(source: PinnedSource, *, created: datetime) -> dict[str, str]:
    annotations = {CREATED_ANNOTATION: created.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if source.kind == "git":
        annotations[SOURCE_LABEL] = source.location
    if source.revision:
        annotations[REVISION_LABEL] = source.revision
    return annotations


def index_created(source: PinnedSource) -> datetime:
    """The index's `created`: the source's epoch, so that rebuilding the same source gives
    the same index bytes; the clock only for a source pinned without one."""
    if source.epoch is None:
        return datetime.now(UTC)
    return datetime.fromtimestamp(source.epoch, UTC)


def publish_request(
    request: BuildRequest,
    source: PinnedSource,
    images: Sequence[PlatformImage],
    *,
    index_dir: Path,
    emit: Callable[[str], None],
    annotations: Mapping[str, str] | None = None,
    journal: Path | None = None,
    supply: SupplyChainPlan | None = None,
) -> BuildResult:
    """Publish a request's images under all of its tags."""
    return publish_images(
        images, image=request.image, tags=request.all_tags, source=source,
        index_dir=index_dir, insecure=request.insecure_registry, emit=emit,
        annotations=annotations, journal=journal, supply=supply,
        index_format=request.index_format,
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
    journal: Path | None = None,
    supply: SupplyChainPlan | None = None,
    index_format: IndexFormat = "oci",
) -> BuildResult:
    """Assemble, push and verify; returns the published result or raises PublishError.

    `index_format`: oci, or docker (each platform's manifest converted, same blobs; the
    result, the attestations' subjects and the checks then name the Docker manifests).

    `supply`: SBOMs, provenance and signatures to attach (multiarch.attest), all checked
    by digest before the first tag is written.

    `journal`: where to record the tags before writing them (multiarch.tagjournal), so a
    sweep can put them back should this process be killed between two tag writes.

    Callers that publish one repository from several runs hold `multiarch.publish_lock`
    (and the Prefect concurrency limit) around this: tag records are only true while no
    other run writes the same tags.
    """
    if not images:
        raise PublishError("no platform images to publish")
    if not tags:
        raise PublishError("no tags to publish")
    if len({built.handoff for built in images}) != 1:
        raise PublishError("the platforms were handed over in different ways: build them "
                           "again in one run")
    handoff = handoff_named(images[0].handoff)
    merged = dict(index_annotations(source, created=index_created(source)))
    merged.update(annotations or {})
    with registry_client(image.registry, insecure=insecure) as client:
        found = handoff.collect(images, client=client, image=image)
        manifests: dict[str, bytes] = {}
        if index_format == "docker":
            found, manifests = converted_images(
                found, manifest_bytes=lambda built: _manifest_bytes(client, image, built))
            images = [_renamed(built, layout_image.manifest_digest)
                      for built, (_, layout_image) in zip(images, found, strict=True)]
        index_type = INDEX_FORMATS[index_format]
        index = assemble_index(found, annotations=merged, media_type=index_type)
        digest = sha256_digest(index)
        pushed = Manifest(digest=digest, media_type=index_type, body=index)
        expected = {str(p): img.manifest_digest for p, img in found}
        index_is_new = _read(client, image.repository, digest) is None
        handoff.push_index(index, found, client=client, image=image, index_dir=index_dir,
                           insecure=insecure, emit=emit, manifests=manifests)
        attested: list[Attestation] = []
        signed_by: str | None = None
        if supply is not None and supply.attaches:
            attested, signed_by = attach_supply_chain(
                client, image, index=pushed, images=images, tags=list(tags), plan=supply,
                insecure=insecure, emit=emit)
        # The tag section: a signal here is held until the tags are whole again (all moved
        # and verified, then put back, since a cancelled run publishes nothing).
        with signals_held() as arrived:
            before, moved = write_tags(client, image, list(tags), pushed,
                                       index_is_new=index_is_new, emit=emit, journal=journal)
            if not arrived:
                verify_tags(client, image, list(tags), digest=digest, expected=expected,
                            emit=emit)
            if arrived:
                undone = restore_tags(client, image.repository, moved, before,
                                      index_digest=digest, index_is_new=index_is_new)
                emit(f"[publish] cancelled while writing tags: {undone}")
            if journal is not None:
                journal.unlink(missing_ok=True)
            if arrived:
                raise PublishError(f"cancelled while writing tags: {undone}")
    return BuildResult(
        image=image.name,
        index_digest=digest,
        tags=list(tags),
        platforms=[
            summarise(built, size=layout_image.total_size)
            for built, (_, layout_image) in zip(images, found, strict=True)
        ],
        attestations=attested,
        signed_by=signed_by,
    )


def write_tags(client: RegistryClient, image: ImageReference, tags: list[str],
               pushed: Manifest, *, index_is_new: bool, emit: Callable[[str], None],
               journal: Path | None = None) -> tuple[dict[str, Manifest | None], list[str]]:
    """Point every tag at the pushed index, or leave every tag as it was.

    What each tag holds is recorded first (in `journal` too, for a sweep should this
    process be killed mid-way); each write is a PUT of the exact index bytes (retried
    while the registry's answer is transient). If a tag still cannot be written, every
    tag this run moved is put back, and the one-line error says where things stand.
    Returns the record and the tags moved.
    """
    before = {tag: _read(client, image.repository, tag) for tag in tags}
    emit("[publish] tags before: " + describe(before))
    if journal is not None:
        write_journal(journal, registry=image.registry, repository=image.repository,
                      insecure=client.insecure, index_digest=pushed.digest,
                      index_is_new=index_is_new, before=before)
    moved: list[str] = []
    for tag in tags:
        if (held := before[tag]) is not None and held.digest == pushed.digest:
            continue
        try:
            retrying(lambda tag=tag: put_manifest(client, image.repository, tag,
                                                  body=pushed.body, media_type=pushed.media_type))
        except MultiarchError as exc:
            if _holds(client, image.repository, tag, pushed.digest):
                moved.append(tag)
            undone = restore_tags(client, image.repository, moved, before,
                                  index_digest=pushed.digest, index_is_new=index_is_new)
            if journal is not None:
                journal.unlink(missing_ok=True)
            raise PublishError(f"tag {image.with_tag(tag)} could not be written: {exc}; "
                               f"{undone}") from exc
        moved.append(tag)
        emit(f"[publish] tagged {image.with_tag(tag)} -> {pushed.digest}")
    return before, moved


def restore_tags(client: RegistryClient, repository: str, moved: list[str],
                 before: dict[str, Manifest | None], *, index_digest: str,
                 index_is_new: bool) -> str:
    """Put each moved tag back to what it held; returns what the tags hold now, in words.

    A tag that did not exist cannot be deleted alone on distribution 2.8 (DELETE by tag
    is refused), so the new index is deleted by digest, which untags exactly the tags that
    hold it: safe only when no tag held that index before this run pushed it.
    """
    if not moved:
        return "no tag was moved: " + describe(before)
    problems = []
    for tag in (t for t in moved if before[t] is not None):
        held = before[tag]
        assert held is not None
        try:
            retrying(lambda tag=tag, held=held: put_manifest(
                client, repository, tag, body=held.body, media_type=held.media_type))
        except MultiarchError as exc:
            problems.append(f"tag {tag} could not be put back to {held.digest} ({exc})")
    new = [t for t in moved if before[t] is None]
    if new:
        problems += _remove_new_tags(client, repository, new, index_digest=index_digest,
                                     index_is_new=index_is_new)
    if problems:
        return "ROLLBACK INCOMPLETE: " + "; ".join(problems)
    return "every tag is back where it was: " + describe(before)


def _remove_new_tags(client: RegistryClient, repository: str, new: list[str], *,
                     index_digest: str, index_is_new: bool) -> list[str]:
    names = ", ".join(new)
    if not index_is_new:
        return [f"new tags {names} still hold {index_digest}: the registry cannot delete a "
                "tag alone and that index was already in the repository"]
    try:
        retrying(lambda: delete_manifest(client, repository, index_digest))
    except MultiarchError as exc:
        return [f"new tags {names} still hold {index_digest}: deleting it failed ({exc})"]
    left = [t for t in new if _holds(client, repository, t, index_digest)]
    return [f"new tags {', '.join(left)} still hold {index_digest}"] if left else []


def verify_tags(client: RegistryClient, image: ImageReference, tags: list[str], *,
                digest: str, expected: dict[str, str], emit: Callable[[str], None]) -> None:
    """Read every tag back: each must serve the computed index with every platform in it."""
    for tag in tags:
        served = _read(client, image.repository, tag)
        check_served(image.with_tag(tag), served.body if served else None,
                     expected_digest=digest, expected_manifests=expected)
        emit(f"[publish] verified {image.with_tag(tag)} -> {digest}")


def describe(held: Mapping[str, Manifest | None]) -> str:
    """`latest -> sha256:..., v2 absent`: what each tag holds, for logs and errors."""
    return ", ".join(f"{tag} -> {m.digest}" if m else f"{tag} absent" for tag, m in held.items())


def _manifest_bytes(client: RegistryClient, image: ImageReference,
                    built: LayoutImage) -> bytes:
    """A platform's manifest as its handoff left it: in its layout, or in the registry."""
    if built.layout is not None:
        return blob_path(built.layout, built.manifest_digest).read_bytes()
    found = _read(client, image.repository, built.manifest_digest)
    if found is None:
        raise PublishError(f"{image.with_digest(built.manifest_digest)} vanished")
    return found.body


def _renamed(built: PlatformImage, digest: str) -> PlatformImage:
    """The platform as published: under its converted manifest's digest."""
    reference = built.reference.rsplit("@", 1)[0] + "@" + digest if built.reference else None
    return built.model_copy(update={"digest": digest, "reference": reference})


def _read(client: RegistryClient, repository: str, reference: str) -> Manifest | None:
    return retrying(lambda: read_manifest(client, repository, reference))


def _holds(client: RegistryClient, repository: str, tag: str, digest: str) -> bool:
    """Does the tag hold this digest? When the registry cannot say, assume it might."""
    try:
        held = _read(client, repository, tag)
    except MultiarchError:
        return True
    return held is not None and held.digest == digest


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
    supply: SupplyChainPlan | None = None  # what to attach and sign (no secret: key by path)
    index_format: IndexFormat = "oci"


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
        annotations=spec.annotations, supply=spec.supply, index_format=spec.index_format,
    )
    if spec.cleanup_dir:
        shutil.rmtree(spec.cleanup_dir, ignore_errors=True)
    return result
