"""Typed, digest-pinned results: what a build hands to publish, and what a run returns."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from multiarch.platforms import Platform


class PlatformImage(BaseModel):
    """One platform's built image, as its handoff (multiarch.handoff) left it: an OCI layout
    on the shared volume, or a manifest pushed by digest to the target repository."""

    model_config = ConfigDict(frozen=True)

    platform: Platform
    digest: str  # manifest digest, preserved through publish
    size: int  # compressed bytes: manifest + config + layers
    emulated: bool
    duration_s: float
    handoff: Literal["shared", "registry"] = "shared"
    layout: str | None = None  # shared: directory of the OCI layout
    layout_ref: str = "image"
    reference: str | None = None  # registry: repository@digest
    # Where and when it was built (the provenance records them).
    node_architecture: str | None = None  # the machine's architecture (emulated: not ours)
    node: str | None = None  # the Kubernetes node, or the local machine's name
    builder: str | None = None  # the tools that built it: "buildah 1.28.2, skopeo 1.9.3"
    started_at: datetime | None = None
    finished_at: datetime | None = None


class PlatformSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    platform: Platform
    digest: str
    size: int
    emulated: bool
    duration_s: float
    builder: str | None = None  # the tools that built it, where the runner knows them


class Attestation(BaseModel):
    """One artifact attached at publish as a referrer: an SBOM, a provenance or a signature."""

    model_config = ConfigDict(frozen=True)

    subject: str  # what it is about: `linux/amd64`, `index`, `sbom of linux/amd64`
    kind: Literal["sbom", "provenance", "signature"]
    digest: str  # the artifact manifest's digest (what the referrers API lists)
    subject_digest: str
    size: int  # bytes of the SBOM, statement or signature


class LeftOut(BaseModel):
    """An optional platform that failed, so the index was published without it."""

    model_config = ConfigDict(frozen=True)

    platform: Platform
    reason: str  # the build's own error, as the failure report would give it


class BuildResult(BaseModel):
    """What a successful run published: the index digest and where it lives."""

    model_config = ConfigDict(frozen=True)

    image: str  # registry/repository
    index_digest: str
    tags: list[str]
    platforms: list[PlatformSummary]
    up_to_date: bool = False  # rebuild: if-changed found nothing to do; nothing was built
    attestations: list[Attestation] = []  # SBOMs, provenance and signatures attached
    signed_by: str | None = None  # the signing key's fingerprint
    left_out: list[LeftOut] = []  # optional platforms that failed and are not in the index

    @property
    def pull_reference(self) -> str:
        return f"{self.image}@{self.index_digest}"


def summarise(image: PlatformImage, *, size: int | None = None) -> PlatformSummary:
    """The result row; `size` as measured from the layout when the builder could not."""
    return PlatformSummary(
        platform=image.platform,
        digest=image.digest,
        size=image.size if size is None else size,
        emulated=image.emulated,
        duration_s=round(image.duration_s, 2),
        builder=image.builder,
    )
