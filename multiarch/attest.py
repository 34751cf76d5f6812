"""Attach each platform's SBOM and provenance, sign everything, and check it, before any tag.

Publish calls `attach_supply_chain` once the index and its platforms are in the registry
by digest, and before a single tag moves. Each attestation is an OCI 1.1 artifact whose
`subject` is its platform's manifest (multiarch.referrers), so registry UIs and old
clients see a clean index, not `unknown/unknown` entries. With a key, the index (once per
tag, the identity a containers policy checks on a pull by tag), each platform manifest and
each attestation manifest are signed (multiarch.signing). Then `multiarch.verify` reads it
all back through the registry, as a consumer would: a gap fails the publish, and since no
tag has moved yet, a failed check publishes nothing.

A failed run leaves its attestations and signatures in the repository as referrers of
untagged manifests, like the untagged manifests themselves: harmless, and collected with
them by the registry's garbage collection.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from multiarch import provenance, referrers, sbom, signing
from multiarch.credentials import clean_url
from multiarch.errors import PublishError
from multiarch.oci import layout_from_dir
from multiarch.process import capture
from multiarch.provenance import ProvenanceInputs, redact_build_args
from multiarch.rebuild import Fingerprint
from multiarch.references import ImageReference
from multiarch.registry import RETRY_TIMES, skopeo_error_line
from multiarch.registry_api import Manifest, RegistryClient, read_manifest, retrying
from multiarch.request import BuildRequest
from multiarch.results import Attestation, PlatformImage
from multiarch.source import PinnedSource
from multiarch.verify import verify_image

SBOM_PULL_TIMEOUT_S = 1800.0


def supply_plan(request: BuildRequest, source: PinnedSource, wanted: Fingerprint | None, *,
                invocation_id: str) -> SupplyChainPlan:
    """The run's plan, from its request and what the rebuild check resolved (the bases and
    the Containerfile; without them the provenance says it could not tell)."""
    chain = request.supply_chain
    inputs = ProvenanceInputs(
        image=request.image.name, source_kind=source.kind,
        source_uri=clean_url(source.location) if source.kind == "git" else source.location,
        revision=source.revision, containerfile=request.containerfile or "Containerfile",
        containerfile_digest=wanted.containerfile_digest if wanted else None,
        build_args=redact_build_args(request.build_args, chain.secret_build_args),
        labels=dict(request.labels), target=request.target,
        bases=dict(wanted.bases) if wanted else {}, runner=request.runner.kind,
        handoff=request.handoff, invocation_id=invocation_id,
        source_date_epoch=request.source_date_epoch,
    ) if chain.provenance else None
    created = (datetime.fromtimestamp(source.epoch, UTC) if source.epoch is not None
               else datetime.now(UTC))
    return SupplyChainPlan(sbom=chain.sbom, provenance=inputs, created=created,
                           sign_key_file=chain.sign_key_file,
                           sign_key_block=chain.sign_key_block)


class SupplyChainPlan(BaseModel):
    """What publish attaches and signs. Travels in the publish spec, so it holds no secret:
    a key by file path (on Kubernetes, the mounted Secret's) or by Secret block name."""

    model_config = ConfigDict(frozen=True)

    sbom: bool = True
    provenance: ProvenanceInputs | None = None
    created: datetime  # the SBOM's creation time: the source's, for stable bytes
    sign_key_file: str | None = None
    sign_key_block: str | None = None

    @property
    def attaches(self) -> bool:
        return self.sbom or self.provenance is not None or self.signs

    @property
    def signs(self) -> bool:
        return bool(self.sign_key_file or self.sign_key_block)


def attach_supply_chain(client: RegistryClient, image: ImageReference, *, index: Manifest,
                        images: Sequence[PlatformImage], tags: Sequence[str],
                        plan: SupplyChainPlan, insecure: bool,
                        emit: Callable[[str], None]) -> tuple[list[Attestation], str | None]:
    """Attach, sign and verify; returns what was attached and the signing key's fingerprint.
    Raises PublishError when the result does not verify."""
    key = signing.load_signing_key(key_file=plan.sign_key_file, key_block=plan.sign_key_block)
    attached: list[Attestation] = []
    with contextlib.ExitStack() as stack:
        ring = (stack.enter_context(signing.keyring(key.armored, what=f"signing key from "
                                                    f"{key.origin}")) if key else None)
        for built in images:
            manifest = _manifest(client, image, built.digest)
            subject = str(built.platform)
            if plan.sbom:
                attached.append(_kept(client, image, manifest, subject=subject, kind="sbom",
                                      artifact_type=sbom.SBOM_MEDIA_TYPE) or _attach(
                    client, image, manifest, subject=subject, kind="sbom",
                    artifact_type=sbom.SBOM_MEDIA_TYPE,
                    blob=platform_sbom(built, image=image, plan=plan, insecure=insecure,
                                       emit=emit, subject=json.loads(manifest.body))))
            if plan.provenance is not None:
                attached.append(_kept(
                    client, image, manifest, subject=subject, kind="provenance",
                    artifact_type=provenance.PROVENANCE_ARTIFACT_TYPE) or _attach(
                    client, image, manifest, subject=subject, kind="provenance",
                    artifact_type=provenance.PROVENANCE_ARTIFACT_TYPE,
                    blob=provenance.statement(plan.provenance, built, json.loads(manifest.body)),
                    annotations={provenance.PREDICATE_ANNOTATION: provenance.PREDICATE_TYPE}))
            if ring is not None:
                attached.append(sign_manifest(client, image, manifest, ring, subject=subject,
                                              identity=image.with_digest(built.digest)))
        if ring is not None:
            for item in [a for a in attached if a.kind in ("sbom", "provenance")]:
                artifact = _manifest(client, image, item.digest)
                attached.append(sign_manifest(client, image, artifact, ring,
                                              subject=f"{item.kind} of {item.subject}",
                                              identity=image.with_digest(item.digest)))
            for tag in tags:
                attached.append(sign_manifest(client, image, index, ring, subject="index",
                                              identity=image.with_tag(tag)))
        for item in attached:
            emit(f"[publish] attached {item.kind} of {item.subject}: {item.digest} "
                 f"({item.size} bytes)")
        public = (stack.enter_context(signing.keyring(
            ring.public_key(), what="the signing key's public half")) if ring else None)
        # checked with the public half only, as a consumer would
        report = verify_image(client, image, index.digest, keyring=public,
                              require_sbom=plan.sbom,
                              require_provenance=plan.provenance is not None)
        if not report.ok:
            raise PublishError(f"supply-chain check of {image.with_digest(index.digest)} "
                               f"failed, no tag was moved: {'; '.join(report.gaps)}")
        emit(f"[publish] verified signatures, SBOM and provenance of "
             f"{image.with_digest(index.digest)}"
             + (f" (key {ring.fingerprint})" if ring else " (unsigned: no key)"))
    return attached, ring.fingerprint if ring else None


def _manifest(client: RegistryClient, image: ImageReference, digest: str) -> Manifest:
    found = retrying(lambda: read_manifest(client, image.repository, digest))
    if found is None:
        raise PublishError(f"{image.with_digest(digest)} vanished from the registry")
    return found


def _kept(client: RegistryClient, image: ImageReference, subject_manifest: Manifest, *,
          subject: str, kind: Literal["sbom", "provenance", "signature"], artifact_type: str,
          signed_by: signing.Keyring | None = None, identity: str = "") -> Attestation | None:
    """The attestation (or this key's signature for `identity`) already attached to these
    exact bytes, if any: publishing the same digest again (a reproducible rebuild) keeps it
    rather than adding a second one (an SBOM or provenance of the same bytes, from a run
    that differs only in its clock)."""
    for referrer in referrers.list_referrers(client, image.repository, subject_manifest.digest,
                                             artifact_type=artifact_type):
        if signed_by is not None and (
                referrer.annotations.get(signing.FINGERPRINT_ANNOTATION) != signed_by.fingerprint
                or referrer.annotations.get(signing.IDENTITY_ANNOTATION) != identity):
            continue
        blob = referrers.fetch_artifact(client, image.repository, referrer)
        if signed_by is not None and signed_by.verify(subject_manifest.body, identity, blob):
            continue  # a signature that does not verify is not kept: sign again
        return Attestation(subject=subject, kind=kind, digest=referrer.digest,
                           subject_digest=subject_manifest.digest, size=len(blob))
    return None


def _attach(client: RegistryClient, image: ImageReference, subject_manifest: Manifest, *,
            subject: str, kind: str, artifact_type: str, blob: bytes,
            annotations: dict[str, str] | None = None) -> Attestation:
    referrer = referrers.attach(client, image.repository, subject=subject_manifest,
                                artifact_type=artifact_type, blob=blob,
                                blob_media_type=artifact_type, annotations=annotations)
    return Attestation(subject=subject, kind=kind, digest=referrer.digest,
                       subject_digest=subject_manifest.digest, size=len(blob))


def sign_manifest(client: RegistryClient, image: ImageReference, manifest: Manifest,
                  ring: signing.Keyring, *, subject: str, identity: str) -> Attestation:
    kept = _kept(client, image, manifest, subject=subject, kind="signature",
                 artifact_type=signing.SIGNATURE_ARTIFACT_TYPE, signed_by=ring,
                 identity=identity)
    if kept is not None:
        return kept
    signature = ring.sign(manifest.body, identity)
    referrer = referrers.attach(
        client, image.repository, subject=manifest,
        artifact_type=signing.SIGNATURE_ARTIFACT_TYPE, blob=signature,
        blob_media_type=signing.SIGNATURE_MEDIA_TYPE,
        annotations={signing.IDENTITY_ANNOTATION: identity,
                     signing.FINGERPRINT_ANNOTATION: ring.fingerprint})
    return Attestation(subject=subject, kind="signature", digest=referrer.digest,
                       subject_digest=manifest.digest, size=len(signature))


def platform_sbom(built: PlatformImage, *, image: ImageReference, plan: SupplyChainPlan,
                  insecure: bool, emit: Callable[[str], None],
                  subject: Mapping[str, Any] | None = None) -> bytes:
    """The SBOM of the platform's image: from its layout on the shared volume, or from a
    copy of it pulled by digest (registry handoff). `subject`: the manifest it is attached
    to, whose blobs the scanned image must hold (a Docker manifest names the same blobs as
    the OCI one in the layout, or as skopeo's OCI copy of it)."""
    started = time.monotonic()
    blobs = ([subject["config"]["digest"], *(x["digest"] for x in subject.get("layers", []))]
             if subject is not None else None)
    with _layout_of(built, image=image, insecure=insecure) as (layout, ref):
        document = sbom.sbom_for_layout(layout, ref, name=image.with_digest(built.digest),
                                        created=plan.created, subject_digest=built.digest,
                                        subject_blobs=blobs)
    emit(f"[publish] SBOM of {built.platform}: {len(document)} bytes in "
         f"{time.monotonic() - started:.1f} s")
    return document


@contextlib.contextmanager
def _layout_of(built: PlatformImage, *, image: ImageReference, insecure: bool
               ) -> Iterator[tuple[Path, str]]:
    if built.layout is not None:
        yield Path(built.layout), built.layout_ref
        return
    scratch = Path(tempfile.mkdtemp(prefix="multiarch-sbom-"))
    try:
        source = f"docker://{image.with_digest(built.digest)}"
        tls = ["--src-tls-verify=false"] if insecure else []
        # into `dir:`, which keeps the manifest and config as pushed (OCI or Docker)
        done = capture(["skopeo", "copy", "--quiet", "--preserve-digests", "--retry-times",
                        RETRY_TIMES, *tls, source, f"dir:{scratch / 'pulled'}"],
                       what=f"pulling {built.platform} for its SBOM",
                       timeout_s=SBOM_PULL_TIMEOUT_S)
        if not done.ok:
            raise PublishError(f"pulling {source} for its SBOM failed: "
                               f"{skopeo_error_line(done.stderr.splitlines())}")
        layout_from_dir(scratch / "pulled", scratch / "layout", ref_name="image")
        yield scratch / "layout", "image"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
