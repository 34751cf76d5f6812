"""Check a published image the way a consumer would: index, platforms, signatures, SBOM and
provenance, all read back from the registry.

Used twice: by publish, on the index's digest before any tag moves (a gap publishes
nothing), and by `multiarch verify IMAGE[:TAG|@DIGEST] [--key PUB]`, which prints the
table and exits non-zero on any gap. The rules, per part:

- index: an OCI image index; with a key, at least one signature by that key whose
  identity names this repository (the containers policy `matchRepository`) over the
  index's exact bytes.
- each platform: its manifest, and among its referrers at least one SPDX 2.3 SBOM and one
  SLSA v1 provenance statement whose subject is that manifest's digest; with a key, the
  manifest and those attestations signed as above.

Without a key, signatures are counted but not checked (the table says so): nothing can be
trusted from a signature whose key is not given.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from multiarch import referrers, signing
from multiarch.errors import MultiarchError
from multiarch.ocispec import INDEX_TYPES
from multiarch.provenance import PREDICATE_TYPE, PROVENANCE_ARTIFACT_TYPE, STATEMENT_TYPE
from multiarch.references import ImageReference, parse_reference_fields
from multiarch.registry_api import Manifest, RegistryClient, read_manifest, retrying
from multiarch.sbom import SBOM_MEDIA_TYPE

OK = "ok"


@dataclass(kw_only=True)
class Part:
    """One row of the table: the index, or one platform."""

    name: str
    digest: str
    signature: str = "-"
    sbom: str = "-"
    provenance: str = "-"
    gaps: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class Report:
    reference: str
    digest: str | None
    parts: list[Part] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # before any part could be read

    @property
    def gaps(self) -> list[str]:
        return [*self.problems, *(f"{p.name}: {gap}" for p in self.parts for gap in p.gaps)]

    @property
    def ok(self) -> bool:
        return not self.gaps


def verify_image(client: RegistryClient, image: ImageReference, reference: str, *,
                 keyring: signing.Keyring | None, require_sbom: bool = True,
                 require_provenance: bool = True) -> Report:
    """Check `image` at `reference` (a tag or a digest); never raises for what it finds."""
    shown = (image.with_digest(reference) if reference.startswith("sha256:")
             else image.with_tag(reference))
    report = Report(reference=shown, digest=None)
    try:
        _verify(client, image, reference, report, keyring=keyring, require_sbom=require_sbom,
                require_provenance=require_provenance)
    except MultiarchError as exc:
        report.problems.append(f"could not be read: {exc}")
    return report


def _verify(client: RegistryClient, image: ImageReference, reference: str, report: Report, *,
            keyring: signing.Keyring | None, require_sbom: bool,
            require_provenance: bool) -> None:
    index = _read(client, image, reference)
    if index is None:
        report.problems.append(f"{report.reference} does not exist")
        return
    report.digest = index.digest
    part = Part(name="index", digest=index.digest)
    report.parts.append(part)
    if index.media_type not in INDEX_TYPES:
        part.gaps.append(f"is a {index.media_type}, not a multi-platform index")
        return
    part.signature = _signature(client, image, index, part, keyring=keyring)
    for entry in json.loads(index.body).get("manifests", []):
        platform = entry.get("platform") or {}
        name = "/".join(x for x in (platform.get("os"), platform.get("architecture"),
                                    platform.get("variant")) if x) or entry["digest"]
        part = Part(name=name, digest=entry["digest"])
        report.parts.append(part)
        manifest = _read(client, image, entry["digest"])
        if manifest is None:
            part.gaps.append("its manifest is missing from the registry")
            continue
        part.signature = _signature(client, image, manifest, part, keyring=keyring)
        found = retrying(lambda m=manifest: referrers.list_referrers(
            client, image.repository, m.digest))
        part.sbom = _attestation(client, image, manifest, part, found, keyring=keyring,
                                 kind="SBOM", artifact_type=SBOM_MEDIA_TYPE,
                                 check=_sbom_problem, required=require_sbom)
        part.provenance = _attestation(client, image, manifest, part, found, keyring=keyring,
                                       kind="provenance",
                                       artifact_type=PROVENANCE_ARTIFACT_TYPE,
                                       check=_provenance_problem, required=require_provenance)


def _read(client: RegistryClient, image: ImageReference, reference: str) -> Manifest | None:
    return retrying(lambda: read_manifest(client, image.repository, reference))


def _signature(client: RegistryClient, image: ImageReference, manifest: Manifest, part: Part,
               *, keyring: signing.Keyring | None) -> str:
    """The cell for a manifest's signatures; a gap when a key is given and none holds."""
    found = retrying(lambda: referrers.list_referrers(
        client, image.repository, manifest.digest,
        artifact_type=signing.SIGNATURE_ARTIFACT_TYPE))
    if keyring is None:
        return f"{len(found)} found, not checked (no --key)" if found else "none"
    problems = []
    for referrer in found:
        identity = referrer.annotations.get(signing.IDENTITY_ANNOTATION, "")
        if not _same_repository(identity, image):
            problems.append(f"identity {identity or '(none)'} is another repository")
            continue
        signature = retrying(lambda r=referrer: referrers.fetch_artifact(
            client, image.repository, r))
        why = keyring.verify(manifest.body, identity, signature)
        if why is None:
            return f"{OK} (key {keyring.fingerprint[-16:]})"
        problems.append(why)
    reason = "; ".join(problems) if problems else "no signature"
    part.gaps.append(f"not signed by key {keyring.fingerprint}: {reason}")
    return "MISSING" if not found else "INVALID"


def _same_repository(identity: str, image: ImageReference) -> bool:
    """`repo:tag` or `repo@digest` names this image's repository (`matchRepository`)."""
    try:
        fields = parse_reference_fields(identity.split("@", 1)[0])
    except ValueError:
        return False
    return f"{fields['registry']}/{fields['repository']}" == image.name


def _attestation(client: RegistryClient, image: ImageReference, subject: Manifest, part: Part,
                 found: list[referrers.Referrer], *, keyring: signing.Keyring | None,
                 kind: str, artifact_type: str, check: Callable[[bytes, str], str | None],
                 required: bool) -> str:
    """The cell for one kind of attestation: the first that is well-formed, about this
    manifest, and (with a key) signed; a gap when none is and it is required."""
    candidates = [r for r in found if r.artifact_type == artifact_type]
    problems = []
    for referrer in candidates:
        body = retrying(lambda r=referrer: referrers.fetch_artifact(client, image.repository, r))
        problem = check(body, subject.digest)
        if problem is None and keyring is not None:
            artifact = retrying(lambda r=referrer: referrers.artifact_manifest(
                client, image.repository, r))
            scratch = Part(name="", digest=referrer.digest)
            _signature(client, image, artifact, scratch, keyring=keyring)
            problem = "; ".join(scratch.gaps) or None
        if problem is None:
            return f"{OK} {referrer.digest[:19]}"
        problems.append(problem)
    if not required:
        return "not required" if not candidates else "present"
    part.gaps.append(f"no valid {kind}" + (f": {'; '.join(problems)}" if problems else ""))
    return "MISSING" if not candidates else "INVALID"


def _json(body: bytes) -> dict[str, object] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _sbom_problem(body: bytes, subject_digest: str) -> str | None:
    document = _json(body)
    if document is None:
        return "the SBOM is not JSON"
    if document.get("spdxVersion") != "SPDX-2.3":
        return f"the SBOM is {document.get('spdxVersion')!r}, not SPDX-2.3"
    if not isinstance(document.get("packages"), list):
        return "the SBOM lists no packages"
    return None


def _provenance_problem(body: bytes, subject_digest: str) -> str | None:
    document = _json(body)
    if document is None:
        return "the provenance is not JSON"
    if document.get("_type") != STATEMENT_TYPE or document.get("predicateType") != \
            PREDICATE_TYPE:
        return "the provenance is not an in-toto statement of SLSA v1 provenance"
    subjects = document.get("subject")
    digests = [s.get("digest", {}).get("sha256") for s in subjects
               if isinstance(s, dict)] if isinstance(subjects, list) else []
    if subject_digest.removeprefix("sha256:") not in digests:
        return "the provenance's subject is another manifest"
    return None


def text_table(report: Report) -> str:
    """The table `multiarch verify` prints."""
    header = ("PART", "DIGEST", "SIGNATURE", "SBOM", "PROVENANCE")
    rows = [header] + [(p.name, p.digest[:19], p.signature, p.sbom, p.provenance)
                       for p in report.parts]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             .rstrip() for row in rows]
    return "\n".join(lines)


def export_lookaside(client: RegistryClient, image: ImageReference, report: Report,
                     directory: Path) -> int:
    """Write the signatures of every part as a containers lookaside directory, where
    skopeo and podman read simple signatures (registries.d `lookaside: file://DIR`):
    `DIR/<repository>@sha256=<hex>/signature-<n>`. Returns how many were written."""
    written = 0
    for part in report.parts:
        found = retrying(lambda p=part: referrers.list_referrers(
            client, image.repository, p.digest, artifact_type=signing.SIGNATURE_ARTIFACT_TYPE))
        algorithm, _, hexpart = part.digest.partition(":")
        target = directory / f"{image.repository}@{algorithm}={hexpart}"
        for number, referrer in enumerate(found, start=1):
            target.mkdir(parents=True, exist_ok=True)
            body = retrying(lambda r=referrer: referrers.fetch_artifact(
                client, image.repository, r))
            (target / f"signature-{number}").write_bytes(body)
            written += 1
    return written
