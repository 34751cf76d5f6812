"""OCI 1.1 referrers without a registry: the JSON an attach writes, and the client's choices
between the referrers API and the tag-schema fallback.

The exchanges with a registry that HAS the referrers API are served by an httpx
MockTransport (no such registry runs here: Debian's docker-registry 2.8 has none); the
fallback against the real registry is tests/integration/test_referrers.py.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field

import httpx
import pytest
from pydantic import ValidationError

from multiarch.errors import PublishError
from multiarch.ocispec import (
    EMPTY_DATA,
    EMPTY_DIGEST,
    EMPTY_JSON,
    MEDIA_TYPE_EMPTY,
    MEDIA_TYPE_INDEX,
    MEDIA_TYPE_MANIFEST,
    sha256_digest,
)
from multiarch.referrers import (
    Referrer,
    artifact_manifest_body,
    attach,
    fetch_artifact,
    list_referrers,
    parse_referrers,
    put_blob,
    referrer_descriptor,
    referrers_tag,
    with_referrer,
)
from multiarch.registry_api import Manifest, RegistryClient

SUBJECT_BODY = json.dumps({"schemaVersion": 2, "mediaType": MEDIA_TYPE_MANIFEST,
                           "config": {}, "layers": []}).encode()
SUBJECT = Manifest(digest=sha256_digest(SUBJECT_BODY), media_type=MEDIA_TYPE_MANIFEST,
                   body=SUBJECT_BODY)
SPDX = "application/spdx+json"
INTOTO = "application/vnd.in-toto+json"


def test_the_empty_descriptor_is_the_image_specs():
    assert sha256_digest(EMPTY_JSON) == EMPTY_DIGEST
    assert base64.b64encode(EMPTY_JSON).decode() == EMPTY_DATA


def test_an_artifact_manifest_names_its_type_blob_and_subject():
    blob = b'{"spdxVersion":"SPDX-2.3"}'
    body = artifact_manifest_body(subject=SUBJECT, artifact_type=SPDX, blob=blob,
                                  blob_media_type=SPDX, annotations={"b": "2", "a": "1"})
    assert json.loads(body) == {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "artifactType": SPDX,
        "config": {"mediaType": MEDIA_TYPE_EMPTY, "digest": EMPTY_DIGEST, "size": 2,
                   "data": "e30="},
        "layers": [{"mediaType": SPDX, "digest": sha256_digest(blob), "size": len(blob)}],
        "subject": {"mediaType": MEDIA_TYPE_MANIFEST, "digest": SUBJECT.digest,
                    "size": len(SUBJECT_BODY)},
        "annotations": {"a": "1", "b": "2"},
    }
    # the same artifact is the same manifest, whatever order the annotations came in
    again = artifact_manifest_body(subject=SUBJECT, artifact_type=SPDX, blob=blob,
                                   blob_media_type=SPDX, annotations={"a": "1", "b": "2"})
    assert again == body
    without = artifact_manifest_body(subject=SUBJECT, artifact_type=SPDX, blob=blob,
                                     blob_media_type=SPDX)
    assert "annotations" not in json.loads(without)


def test_a_referrers_entry_carries_artifact_type_and_the_manifests_annotations():
    body = artifact_manifest_body(subject=SUBJECT, artifact_type=INTOTO, blob=b"{}",
                                  blob_media_type=INTOTO, annotations={"k": "v"})
    assert referrer_descriptor(body) == {
        "mediaType": MEDIA_TYPE_MANIFEST, "digest": sha256_digest(body), "size": len(body),
        "artifactType": INTOTO, "annotations": {"k": "v"}}


def test_a_manifest_without_artifact_type_is_listed_under_its_config_type():
    body = json.dumps({"schemaVersion": 2, "mediaType": MEDIA_TYPE_MANIFEST,
                       "config": {"mediaType": "application/vnd.example.sig.v1+json"},
                       "layers": []}).encode()
    entry = referrer_descriptor(body)
    assert entry["artifactType"] == "application/vnd.example.sig.v1+json"
    assert "annotations" not in entry


def test_the_referrers_index_gains_an_entry_once_and_keeps_the_others():
    first = {"mediaType": MEDIA_TYPE_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 10,
             "artifactType": SPDX}
    second = {**first, "digest": "sha256:" + "b" * 64, "artifactType": INTOTO}
    created = with_referrer(None, first)
    assert created is not None
    assert json.loads(created) == {"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX,
                                   "manifests": [first]}
    assert with_referrer(created, first) is None  # already listed: nothing to write
    # another client's entry and index annotations survive
    theirs = json.dumps({"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX,
                         "annotations": {"x": "y"}, "manifests": [first]}).encode()
    updated = json.loads(with_referrer(theirs, second) or b"")
    assert updated["manifests"] == [first, second] and updated["annotations"] == {"x": "y"}
    with pytest.raises(ValueError, match="not an OCI image index"):
        with_referrer(SUBJECT_BODY, second)


def test_the_referrers_tag_follows_the_tag_schema():
    assert referrers_tag("sha256:" + "ab" * 32) == "sha256-" + "ab" * 32
    assert referrers_tag("sha512:" + "c" * 128) == "sha512-" + "c" * 64  # cut to 64
    assert referrers_tag("sha256+b64u:AbC_d=") == "sha256-b64u-AbC_d-"
    with pytest.raises(ValueError, match="not a digest"):
        referrers_tag("latest")


def test_an_answer_that_is_not_an_index_lists_nothing():
    assert parse_referrers(b"<html>404</html>") is None
    assert parse_referrers(SUBJECT_BODY) is None
    listed = parse_referrers(json.dumps({
        "schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX,
        "manifests": [{"mediaType": MEDIA_TYPE_MANIFEST, "digest": "sha256:" + "a" * 64,
                       "size": 5, "artifactType": SPDX, "annotations": {"k": "v"}}]}).encode())
    assert listed == [Referrer(digest="sha256:" + "a" * 64, artifact_type=SPDX, size=5,
                               annotations={"k": "v"})]


@dataclass
class FakeRegistry:
    """A registry as httpx handlers: blobs, manifests by digest or tag, and (with
    `api=True`) the referrers API, paged `page` entries at a time, ignoring the filter."""

    api: bool
    page: int = 1
    # go-containerregistry's registry: an API, but no OCI-Subject header, and the config's
    # media type listed as every referrer's artifactType
    like_ggcr: bool = False
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(f"{request.method} {request.url.path}")
        path = request.url.path
        if m := re.fullmatch(r"/v2/(.+)/blobs/uploads/(\w+)", path):
            assert request.url.params["_state"] == "s1"  # the Location's own query is kept
            data = request.read()
            assert sha256_digest(data) == request.url.params["digest"]
            self.blobs[request.url.params["digest"]] = data
            return httpx.Response(201)
        if m := re.fullmatch(r"/v2/(.+)/blobs/uploads/", path):
            return httpx.Response(202, headers={
                "Location": f"/v2/{m[1]}/blobs/uploads/u1?_state=s1"})  # relative
        if m := re.fullmatch(r"/v2/(.+)/blobs/(sha256:\w+)", path):
            if m[2] not in self.blobs:
                return httpx.Response(404)
            return httpx.Response(200, content=b"" if request.method == "HEAD"
                                  else self.blobs[m[2]])
        if m := re.fullmatch(r"/v2/(.+)/manifests/(.+)", path):
            return self.manifest(request, m[2])
        if m := re.fullmatch(r"/v2/(.+)/referrers/(.+)", path):
            return self.referrers(request, m[2]) if self.api else httpx.Response(404)
        return httpx.Response(404)

    def manifest(self, request: httpx.Request, reference: str) -> httpx.Response:
        if request.method == "PUT":
            body = request.read()
            self.manifests[reference] = (body, request.headers["content-type"])
            headers = {"Docker-Content-Digest": sha256_digest(body)}
            subject = json.loads(body).get("subject")
            if self.api and subject and not self.like_ggcr:
                headers["OCI-Subject"] = subject["digest"]
            return httpx.Response(201, headers=headers)
        if reference not in self.manifests:
            return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
        body, media_type = self.manifests[reference]
        return httpx.Response(200, content=body, headers={"Content-Type": media_type})

    def referrers(self, request: httpx.Request, digest: str) -> httpx.Response:
        entries = [referrer_descriptor(body) for body, _ in self.manifests.values()
                   if (json.loads(body).get("subject") or {}).get("digest") == digest]
        if self.like_ggcr:
            entries = [{**e, "artifactType": MEDIA_TYPE_EMPTY} for e in entries]
        entries.sort(key=lambda e: e["digest"])
        start = int(request.url.params.get("after", 0))
        headers = {"Content-Type": MEDIA_TYPE_INDEX}
        if start + self.page < len(entries):
            headers["Link"] = f'<{request.url.path}?after={start + self.page}>; rel="next"'
        index = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX,
                 "manifests": entries[start:start + self.page]}
        return httpx.Response(200, json=index, headers=headers)


def client_for(registry: FakeRegistry) -> RegistryClient:
    client = RegistryClient(registry="registry.test", insecure=False, auth_files=[])
    client._http = httpx.Client(transport=httpx.MockTransport(registry))
    return client


def test_a_registry_with_the_referrers_api_gets_no_fallback_tag_and_is_paged_through():
    registry = FakeRegistry(api=True)
    client = client_for(registry)
    sbom = attach(client, "team/app", subject=SUBJECT, artifact_type=SPDX, blob=b"sbom",
                  blob_media_type=SPDX)
    provenance = attach(client, "team/app", subject=SUBJECT, artifact_type=INTOTO,
                        blob=b"prov", blob_media_type=INTOTO, annotations={"k": "v"})
    assert referrers_tag(SUBJECT.digest) not in registry.manifests
    assert {r.digest for r in list_referrers(client, "team/app", SUBJECT.digest)} == {
        sbom.digest, provenance.digest}
    # the registry ignores the filter (no OCI-Filters-Applied): the client applies it
    assert list_referrers(client, "team/app", SUBJECT.digest, artifact_type=INTOTO) == [
        provenance]
    assert fetch_artifact(client, "team/app", provenance) == b"prov"


def test_without_the_api_the_tag_lists_and_a_second_attach_uploads_nothing():
    registry = FakeRegistry(api=False)
    client = client_for(registry)
    first = attach(client, "team/app", subject=SUBJECT, artifact_type=SPDX, blob=b"sbom",
                   blob_media_type=SPDX)
    registry.seen.clear()
    assert attach(client, "team/app", subject=SUBJECT, artifact_type=SPDX, blob=b"sbom",
                  blob_media_type=SPDX) == first
    assert not [call for call in registry.seen if call.startswith("POST")]
    assert f"PUT /v2/team/app/manifests/{referrers_tag(SUBJECT.digest)}" not in registry.seen
    assert list_referrers(client, "team/app", SUBJECT.digest) == [first]


def test_an_api_without_oci_subject_gets_the_tag_and_misstated_types_are_read_back():
    registry = FakeRegistry(api=True, like_ggcr=True)
    client = client_for(registry)
    sbom = attach(client, "team/app", subject=SUBJECT, artifact_type=SPDX, blob=b"sbom",
                  blob_media_type=SPDX)
    assert referrers_tag(SUBJECT.digest) in registry.manifests  # no OCI-Subject: fallback
    # the API lists it with the empty config's type, the tag with the right one: once
    assert list_referrers(client, "team/app", SUBJECT.digest, artifact_type=SPDX) == [sbom]
    del registry.manifests[referrers_tag(SUBJECT.digest)]  # the API listing alone
    assert list_referrers(client, "team/app", SUBJECT.digest, artifact_type=SPDX) == [sbom]


def test_a_referrers_tag_that_holds_an_image_is_not_overwritten():
    registry = FakeRegistry(api=False)
    registry.manifests[referrers_tag(SUBJECT.digest)] = (SUBJECT_BODY, MEDIA_TYPE_MANIFEST)
    client = client_for(registry)
    with pytest.raises(PublishError) as caught:
        attach(client, "team/app", subject=SUBJECT, artifact_type=SPDX, blob=b"sbom",
               blob_media_type=SPDX)
    message = str(caught.value)
    assert referrers_tag(SUBJECT.digest) in message and "not an OCI image index" in message
    assert "\n" not in message
    assert registry.manifests[referrers_tag(SUBJECT.digest)][0] == SUBJECT_BODY
    assert list_referrers(client, "team/app", SUBJECT.digest) == []  # the spec: none


@pytest.mark.parametrize("bad", [{"artifact_type": "sbom"},
                                 {"blob_media_type": "application/"},
                                 {"annotations": {"k": 1}}])
def test_bad_inputs_are_refused_before_anything_is_pushed(bad):
    registry = FakeRegistry(api=False)
    arguments = {"artifact_type": SPDX, "blob": b"x", "blob_media_type": SPDX, **bad}
    with pytest.raises(ValidationError):
        attach(client_for(registry), "team/app", subject=SUBJECT, **arguments)
    assert registry.seen == []


def test_a_failed_upload_is_one_line_naming_the_call_and_the_answer():
    def refusing(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(404)
        return httpx.Response(403, json={"errors": [{"code": "DENIED",
                                                     "message": "no push\nhere"}]})

    client = RegistryClient(registry="registry.test", insecure=False, auth_files=[])
    client._http = httpx.Client(transport=httpx.MockTransport(refusing))
    with pytest.raises(PublishError) as caught:
        put_blob(client, "team/app", b"x", SPDX)
    assert str(caught.value) == (
        f"POST registry.test/v2/team/app/blobs/uploads/ ({SPDX} blob): 403 DENIED: no push here")
