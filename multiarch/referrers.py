"""OCI 1.1 referrers: artifacts (SBOM, provenance, signatures) attached to a manifest.

An artifact is one blob under an OCI image manifest whose `artifactType` says what it is,
whose config is the empty `{}` descriptor, and whose `subject` names the platform
manifest (or index) it describes (image-spec v1.1, manifest.md). The subject's bytes
never change, so the tag a user pulls is untouched; and unlike `unknown/unknown` entries
inside the index, old clients and registry UIs never see the artifacts.

Registries with the referrers API index the `subject` themselves and say so with an
`OCI-Subject` header on the manifest PUT. Registries that send no such header (Debian's
docker-registry 2.8 has no API; go-containerregistry's has one but sends no header) get
the distribution-spec v1.1 fallback: the client keeps an OCI image index under the tag
`sha256-<hex of the subject digest>`, one descriptor per referrer, carrying its
`artifactType` and its manifest's `annotations`. So which one is used is decided by the
registry's answer, never guessed, and listing reads both, each referrer once. A listing
entry without an `artifactType`, or with the empty config's type, is resolved from the
artifact's own manifest.

The fallback tag is a read-modify-write with no lock on the registry's side (2.8 has no
conditional PUT). That is safe here because the project serialises publishes of one
repository (tasks/publish.py), and an attach re-reads the tag on every retry. The tag only
ever gains entries: an entry already listed is not written again, so attaching the same
bytes twice lists them once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from pydantic import BaseModel, ConfigDict, StringConstraints

from multiarch.errors import PublishError
from multiarch.ocispec import (
    EMPTY_DATA,
    EMPTY_DIGEST,
    EMPTY_JSON,
    MEDIA_TYPE_EMPTY,
    MEDIA_TYPE_INDEX,
    MEDIA_TYPE_MANIFEST,
    OCI_SUBJECT_HEADER,
    sha256_digest,
)
from multiarch.registry_api import (
    Manifest,
    RegistryClient,
    failure,
    read_blob,
    read_manifest,
    retrying,
)

# RFC 6838 section 4.2 (what image-spec requires of artifactType): type "/" subtype, each a
# restricted-name of at most 127 characters.
_RESTRICTED_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
MediaType = Annotated[str, StringConstraints(pattern=rf"^{_RESTRICTED_NAME}/{_RESTRICTED_NAME}$")]
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
MAX_LIST_PAGES = 100  # a referrers listing that pages on past this is a registry loop


@dataclass(frozen=True, kw_only=True)
class Referrer:
    """One artifact attached to a subject, as the referrers list describes it."""

    digest: str  # the artifact manifest's digest
    artifact_type: str
    size: int
    annotations: Mapping[str, str]


class ArtifactInput(BaseModel):
    """What a caller asks to attach, checked before anything is pushed."""

    model_config = ConfigDict(frozen=True, strict=True)

    artifact_type: MediaType
    blob_media_type: MediaType
    annotations: dict[str, str] = {}


def _scope(repository: str, actions: str) -> str:
    return f"repository:{repository}:{actions}"


def _json(data: object) -> bytes:
    """Compact JSON: the same artifact always serialises to the same manifest digest."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def referrers_tag(subject_digest: str) -> str:
    """The referrers tag schema: `sha256:abc...` -> `sha256-abc...` (the digest part is cut
    to 64 characters, anything a tag cannot hold becomes `-`)."""
    algorithm, separator, encoded = subject_digest.partition(":")
    if not separator or not algorithm or not encoded:
        raise ValueError(f"not a digest: {subject_digest!r}")
    return _TAG_UNSAFE.sub("-", f"{algorithm}-{encoded[:64]}")


def descriptor(*, media_type: str, digest: str, size: int) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size}


def empty_descriptor() -> dict[str, Any]:
    return {**descriptor(media_type=MEDIA_TYPE_EMPTY, digest=EMPTY_DIGEST, size=len(EMPTY_JSON)),
            "data": EMPTY_DATA}


def artifact_manifest_body(*, subject: Manifest, artifact_type: str, blob: bytes,
                           blob_media_type: str,
                           annotations: Mapping[str, str] | None = None) -> bytes:
    """The artifact's image manifest: `artifactType`, the empty config, the blob as its one
    layer, `subject` (the exact bytes' type, digest and size) and the annotations."""
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "artifactType": artifact_type,
        "config": empty_descriptor(),
        "layers": [descriptor(media_type=blob_media_type, digest=sha256_digest(blob),
                              size=len(blob))],
        "subject": descriptor(media_type=subject.media_type, digest=subject.digest,
                              size=len(subject.body)),
    }
    if annotations:
        manifest["annotations"] = dict(sorted(annotations.items()))
    return _json(manifest)


def referrer_descriptor(manifest_body: bytes) -> dict[str, Any]:
    """The referrers-list entry for a pushed manifest (distribution-spec v1.1): its
    `artifactType` (the config's media type when it has none) and all its annotations."""
    manifest = json.loads(manifest_body)
    entry = descriptor(media_type=manifest.get("mediaType", MEDIA_TYPE_MANIFEST),
                       digest=sha256_digest(manifest_body), size=len(manifest_body))
    artifact_type = manifest.get("artifactType") or manifest.get("config", {}).get("mediaType")
    if artifact_type:
        entry["artifactType"] = artifact_type
    if manifest.get("annotations"):
        entry["annotations"] = manifest["annotations"]
    return entry


def _as_index(body: bytes) -> dict[str, Any] | None:
    """The parsed body when it is an OCI image index, else None."""
    try:
        index = json.loads(body)
    except ValueError:
        return None
    if (not isinstance(index, dict) or index.get("schemaVersion") != 2
            or index.get("mediaType", MEDIA_TYPE_INDEX) != MEDIA_TYPE_INDEX
            or not isinstance(index.get("manifests"), list)):
        return None
    return index


def with_referrer(index_body: bytes | None, entry: Mapping[str, Any]) -> bytes | None:
    """The referrers index with `entry` added, keeping every other entry and field; None
    when the entry's digest is already listed (nothing to write). ValueError when the
    existing bytes are not an OCI image index."""
    if index_body is None:
        index: dict[str, Any] = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX,
                                 "manifests": []}
    else:
        parsed = _as_index(index_body)
        if parsed is None:
            raise ValueError("not an OCI image index")
        index = parsed
    if any(isinstance(m, dict) and m.get("digest") == entry["digest"]
           for m in index["manifests"]):
        return None
    index["manifests"].append(dict(entry))
    return _json(index)


def parse_referrers(index_body: bytes) -> list[Referrer] | None:
    """The referrers an index lists, or None when the bytes are not an OCI image index."""
    index = _as_index(index_body)
    if index is None:
        return None
    found = []
    for entry in index["manifests"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
            continue
        annotations = entry.get("annotations") or {}
        found.append(Referrer(
            digest=entry["digest"],
            artifact_type=str(entry.get("artifactType") or ""),
            size=int(entry.get("size", 0)),
            annotations={str(k): str(v) for k, v in annotations.items()},
        ))
    return found


def _upload_url(client: RegistryClient, response: httpx.Response, digest: str) -> str:
    """The upload session's URL (`Location` may be relative and carry a query) + digest."""
    location = response.headers.get("location", "")
    url = str(response.url.join(location))
    return f"{url}{'&' if '?' in url else '?'}digest={digest}"


def put_blob(client: RegistryClient, repository: str, data: bytes, media_type: str) -> str:
    """Upload a blob monolithically (POST, then PUT with `?digest=`) unless HEAD finds it;
    returns its digest. `media_type` only names the blob in errors: registries store bytes."""
    digest = sha256_digest(data)
    scope = _scope(repository, "pull,push")
    blob_path = f"/v2/{repository}/blobs/{digest}"
    upload_path = f"/v2/{repository}/blobs/uploads/"

    def upload() -> str:
        head = client.request("HEAD", blob_path, scope=scope)
        if head.status_code == 200:
            return digest
        if head.status_code != 404:
            raise failure(f"HEAD {client.registry}{blob_path}", head)
        opened = client.request("POST", upload_path, scope=scope)
        if opened.status_code != 202 or not opened.headers.get("location"):
            raise failure(f"POST {client.registry}{upload_path} ({media_type} blob)", opened)
        stored = client.request("PUT", _upload_url(client, opened, digest), scope=scope,
                                content=data,
                                headers={"Content-Type": "application/octet-stream"})
        if stored.status_code != 201:
            raise failure(f"PUT {client.registry}{upload_path}<session>?digest={digest} "
                          f"({media_type} blob)", stored)
        return digest

    return retrying(upload)


def _put_manifest_by_digest(client: RegistryClient, repository: str,
                            body: bytes) -> httpx.Response:
    digest = sha256_digest(body)
    path = f"/v2/{repository}/manifests/{digest}"
    response = client.request("PUT", path, scope=_scope(repository, "pull,push"),
                              content=body, headers={"Content-Type": MEDIA_TYPE_MANIFEST})
    if response.status_code not in (200, 201):
        raise failure(f"PUT {client.registry}{path}", response)
    reported = response.headers.get("docker-content-digest")
    if reported and reported != digest:
        raise PublishError(f"PUT {client.registry}{path}: the registry stored {reported}")
    return response


def _add_to_referrers_tag(client: RegistryClient, repository: str, subject_digest: str,
                          entry: Mapping[str, Any]) -> None:
    """Read-modify-write of the fallback tag (serialised per repository by the caller)."""
    tag = referrers_tag(subject_digest)
    path = f"/v2/{repository}/manifests/{tag}"
    current = read_manifest(client, repository, tag)
    if current is not None and current.media_type != MEDIA_TYPE_INDEX:
        raise PublishError(f"GET {client.registry}{path}: the referrers tag holds "
                           f"{current.media_type or 'an untyped manifest'}, not an OCI image "
                           f"index; left as it is")
    try:
        updated = with_referrer(None if current is None else current.body, entry)
    except ValueError:
        raise PublishError(f"GET {client.registry}{path}: the referrers tag is not a valid "
                           f"OCI image index; left as it is") from None
    if updated is None:
        return
    response = client.request("PUT", path, scope=_scope(repository, "pull,push"),
                              content=updated, headers={"Content-Type": MEDIA_TYPE_INDEX})
    if response.status_code not in (200, 201):
        raise failure(f"PUT {client.registry}{path}", response)


def attach(client: RegistryClient, repository: str, *, subject: Manifest, artifact_type: str,
           blob: bytes, blob_media_type: str,
           annotations: Mapping[str, str] | None = None) -> Referrer:
    """Push `blob` as an artifact whose subject is `subject`, in the subject's repository.

    Blob, empty config, then the manifest by digest; when the registry's answer lacks
    `OCI-Subject` it did not index the subject, and the referrers tag is updated instead.
    Idempotent: the same inputs give the same manifest digest, listed once.
    """
    checked = ArtifactInput(artifact_type=artifact_type, blob_media_type=blob_media_type,
                            annotations=dict(annotations or {}))
    if sha256_digest(subject.body) != subject.digest:
        raise ValueError(f"subject {subject.digest}: its body does not hash to that digest")
    put_blob(client, repository, blob, checked.blob_media_type)
    put_blob(client, repository, EMPTY_JSON, MEDIA_TYPE_EMPTY)
    body = artifact_manifest_body(subject=subject, artifact_type=checked.artifact_type,
                                  blob=blob, blob_media_type=checked.blob_media_type,
                                  annotations=checked.annotations)
    response = retrying(lambda: _put_manifest_by_digest(client, repository, body))
    entry = referrer_descriptor(body)
    if OCI_SUBJECT_HEADER.lower() not in response.headers:
        retrying(lambda: _add_to_referrers_tag(client, repository, subject.digest, entry))
    return Referrer(digest=entry["digest"], artifact_type=checked.artifact_type,
                    size=len(body), annotations=dict(entry.get("annotations", {})))


def _from_api(client: RegistryClient, repository: str, subject_digest: str,
              artifact_type: str | None) -> list[Referrer] | None:
    """The referrers API's answer, every page; None when the registry has no such API."""
    path = f"/v2/{repository}/referrers/{subject_digest}"
    params = {"artifactType": artifact_type} if artifact_type else None
    response = client.request("GET", path, scope=_scope(repository, "pull"), params=params,
                              headers={"Accept": MEDIA_TYPE_INDEX}, follow_redirects=True)
    found: list[Referrer] = []
    for _ in range(MAX_LIST_PAGES):
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise failure(f"GET {client.registry}{path}", response)
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        page = parse_referrers(response.content) if media_type == MEDIA_TYPE_INDEX else None
        if page is None:
            return None
        found += page
        following = response.links.get("next", {}).get("url")
        if not following:
            return found
        response = client.request("GET", str(response.url.join(following)),
                                  scope=_scope(repository, "pull"),
                                  headers={"Accept": MEDIA_TYPE_INDEX}, follow_redirects=True)
    raise PublishError(f"GET {client.registry}{path}: more than {MAX_LIST_PAGES} pages")


def _from_tag(client: RegistryClient, repository: str, subject_digest: str) -> list[Referrer]:
    """The referrers tag's entries; none when the tag is absent or holds no valid index."""
    current = read_manifest(client, repository, referrers_tag(subject_digest))
    if current is None or current.media_type != MEDIA_TYPE_INDEX:
        return []
    return parse_referrers(current.body) or []


def _merged(*listings: list[Referrer]) -> list[Referrer]:
    """Every referrer once, by digest, in the order first listed."""
    seen: dict[str, Referrer] = {}
    for listing in listings:
        for referrer in listing:
            seen.setdefault(referrer.digest, referrer)
    return list(seen.values())


def _stated_type(client: RegistryClient, repository: str, referrer: Referrer) -> Referrer:
    """The referrer with its manifest's own `artifactType` when the listing gives none or
    the empty config's type (which no artifact is: go-containerregistry's registry lists
    the config media type there)."""
    if referrer.artifact_type not in ("", MEDIA_TYPE_EMPTY):
        return referrer
    manifest = json.loads(artifact_manifest(client, repository, referrer).body)
    stated = manifest.get("artifactType") or manifest.get("config", {}).get("mediaType", "")
    annotations = {**(manifest.get("annotations") or {}), **referrer.annotations}
    return Referrer(digest=referrer.digest, artifact_type=str(stated), size=referrer.size,
                    annotations={str(k): str(v) for k, v in annotations.items()})


def list_referrers(client: RegistryClient, repository: str, subject_digest: str, *,
                   artifact_type: str | None = None) -> list[Referrer]:
    """Every artifact attached to `subject_digest`, of `artifact_type` when given.

    Both places are read: the API (where there is one) and the fallback tag, which attach
    writes whenever a registry does not answer `OCI-Subject`, API or not. The filter is
    applied here too: the spec lets a registry ignore it, and a listing's type may be wrong.
    """
    referrers_tag(subject_digest)  # a malformed digest fails here, not as a registry 400

    def listing() -> list[Referrer]:
        found = _from_api(client, repository, subject_digest, None) or []
        found = _merged(found, _from_tag(client, repository, subject_digest))
        return [_stated_type(client, repository, r) for r in found]

    found = retrying(listing)
    return [r for r in found if artifact_type is None or r.artifact_type == artifact_type]


def artifact_manifest(client: RegistryClient, repository: str, referrer: Referrer) -> Manifest:
    """The artifact's manifest, its exact bytes checked against the listed digest (what a
    signature covers)."""
    path = f"/v2/{repository}/manifests/{referrer.digest}"
    manifest = retrying(lambda: read_manifest(client, repository, referrer.digest))
    if manifest is None:
        raise PublishError(f"GET {client.registry}{path}: 404, the referrer is listed but "
                           f"its manifest is not in the registry")
    if manifest.digest != referrer.digest:
        raise PublishError(f"GET {client.registry}{path}: the bytes do not match the digest")
    return manifest


def fetch_artifact(client: RegistryClient, repository: str, referrer: Referrer) -> bytes:
    """The artifact's content: its manifest's single layer, checked against its digest."""
    manifest = artifact_manifest(client, repository, referrer)
    layers = json.loads(manifest.body).get("layers") or []
    if len(layers) != 1:
        raise PublishError(f"artifact {referrer.digest} in {client.registry}/{repository} has "
                           f"{len(layers)} layers, not the one blob an artifact carries here")
    layer = layers[0]
    data = retrying(lambda: read_blob(client, repository, layer["digest"]))
    if len(data) != layer.get("size"):
        raise PublishError(f"artifact {referrer.digest}: layer {layer['digest']} is "
                           f"{len(data)} bytes, its descriptor says {layer.get('size')}")
    return data
