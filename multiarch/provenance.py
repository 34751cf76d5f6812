"""SLSA v1 provenance for each platform image, as an in-toto Statement v1.

What a consumer needs to trust, or reproduce, one platform's image: which source at which
commit, which Containerfile (by digest), which build arguments, FROM which bases (by
digest), on which runner and machine architecture, emulated or not, and when. The run's
half (`ProvenanceInputs`) is gathered by the flow before publish; the platform's half
comes from its build (times, node, emulation) and from its manifest (buildah records the
final stage's base digest there). Credentials never enter: the source URL is stripped of
them, and build argument values whose names look secret, or are listed as secret, are
replaced by "[redacted]" (their names stay, so a reader knows they were set).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from importlib import metadata

from pydantic import BaseModel, ConfigDict

from multiarch.build_secrets import looks_secret
from multiarch.credentials import clean_url
from multiarch.ocispec import BASE_DIGEST_ANNOTATION, BASE_NAME_ANNOTATION
from multiarch.results import PlatformImage

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://multiarch-builder.dev/build-multiarch-image/v1"
BUILDER_ID = "https://multiarch-builder.dev/runner/"  # + the runner's kind
PROVENANCE_ARTIFACT_TYPE = "application/vnd.in-toto+json"
PREDICATE_ANNOTATION = "in-toto.io/predicate-type"
REDACTED = "[redacted]"
# Names that hold secrets by convention (GITHUB_TOKEN, NPM_AUTH, DB_PASSWORD, API_KEY...).
SECRET_NAME_RE = re.compile(
    r"TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL|AUTH|(^|_)KEY($|_)|APIKEY|PRIVATE", re.I)


class ProvenanceInputs(BaseModel):
    """The run's half of every platform's provenance; travels in the publish spec."""

    model_config = ConfigDict(frozen=True)

    image: str  # registry/repository
    source_kind: str
    source_uri: str  # without credentials
    revision: str | None
    containerfile: str  # its path in the context
    containerfile_digest: str | None  # of the bytes buildah reads: a symlink followed
    build_args: dict[str, str]  # already redacted
    labels: dict[str, str]
    target: str | None
    bases: dict[str, str | None]  # FROM name -> index (or manifest) digest, as resolved
    runner: str
    handoff: str
    invocation_id: str  # the Prefect flow run's id, or the run id without Prefect
    source_date_epoch: int | None = None


def redact_build_args(build_args: Mapping[str, str], secret_names: tuple[str, ...] = ()
                      ) -> dict[str, str]:
    """Build args with secret values replaced; listed names and secret-looking names (a
    superset of the names preflight warns about, multiarch.build_secrets.looks_secret)."""
    listed = {name.upper() for name in secret_names}
    return {name: REDACTED if name.upper() in listed or SECRET_NAME_RE.search(name)
            or looks_secret(name) else value
            for name, value in sorted(build_args.items())}


def builder_version() -> str:
    try:
        return metadata.version("multiarch-builder")
    except metadata.PackageNotFoundError:
        return "unknown"


def source_dependency(inputs: ProvenanceInputs) -> dict[str, object]:
    if inputs.source_kind == "git":
        uri = f"git+{clean_url(inputs.source_uri)}"
        entry: dict[str, object] = {"uri": f"{uri}@{inputs.revision}" if inputs.revision
                                    else uri}
        if inputs.revision:
            entry["digest"] = {"gitCommit": inputs.revision}
        return entry
    return {"uri": f"file://{inputs.source_uri}", "name": "local build context"}


def base_dependencies(inputs: ProvenanceInputs, manifest: Mapping[str, object]
                      ) -> list[dict[str, object]]:
    """Every FROM base with the digest it resolved to; the final stage's base also with the
    manifest digest buildah pulled for this platform (its manifest annotation)."""
    annotations = manifest.get("annotations") or {}
    assert isinstance(annotations, dict)
    pulled_name, pulled_digest = (annotations.get(BASE_NAME_ANNOTATION),
                                  annotations.get(BASE_DIGEST_ANNOTATION))
    found: list[dict[str, object]] = []
    for name, digest in inputs.bases.items():
        entry: dict[str, object] = {"uri": f"docker://{name}", "name": name}
        if digest:
            entry["digest"] = {"sha256": digest.removeprefix("sha256:")}
        if name == pulled_name and pulled_digest:
            entry["annotations"] = {"platformManifestDigest": pulled_digest}
        found.append(entry)
    if pulled_name and pulled_digest and pulled_name not in inputs.bases:
        found.append({"uri": f"docker://{pulled_name}", "name": pulled_name,
                      "digest": {"sha256": str(pulled_digest).removeprefix("sha256:")}})
    return found


def _time(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def statement(inputs: ProvenanceInputs, built: PlatformImage,
              manifest: Mapping[str, object]) -> bytes:
    """The platform's in-toto statement (compact JSON, keys sorted: stable bytes)."""
    external: dict[str, object] = {
        "source": {"kind": inputs.source_kind,
                   "uri": clean_url(inputs.source_uri) if inputs.source_kind == "git"
                   else inputs.source_uri,
                   "revision": inputs.revision},
        "containerfile": {"path": inputs.containerfile,
                          **({"digest": {"sha256": inputs.containerfile_digest.removeprefix(
                              "sha256:")}} if inputs.containerfile_digest else {})},
        "platform": str(built.platform),
        "buildArgs": inputs.build_args,
        "labels": inputs.labels,
        "target": inputs.target,
    }
    if inputs.source_date_epoch is not None:
        external["sourceDateEpoch"] = inputs.source_date_epoch
    document = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": inputs.image,
                     "digest": {"sha256": built.digest.removeprefix("sha256:")}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "internalParameters": {
                    "runner": inputs.runner,
                    "handoff": inputs.handoff,
                    "nodeArchitecture": built.node_architecture,
                    "node": built.node,
                    "emulated": built.emulated,
                },
                "resolvedDependencies": [source_dependency(inputs),
                                         *base_dependencies(inputs, manifest)],
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID + inputs.runner,
                            "version": {"multiarch-builder": builder_version()}},
                "metadata": {"invocationId": inputs.invocation_id,
                             "startedOn": _time(built.started_at),
                             "finishedOn": _time(built.finished_at)},
            },
        },
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
