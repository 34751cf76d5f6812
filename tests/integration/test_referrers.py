"""OCI 1.1 referrers on the real registry (Debian's docker-registry 2.8, no referrers API):
artifacts attached to a platform manifest of the busybox base, listed back through the
referrers tag schema, fetched, and read by skopeo."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from multiarch.errors import PublishError
from multiarch.ocispec import (
    EMPTY_DIGEST,
    MEDIA_TYPE_EMPTY,
    MEDIA_TYPE_INDEX,
    MEDIA_TYPE_MANIFEST,
    sha256_digest,
)
from multiarch.referrers import (
    artifact_manifest,
    attach,
    fetch_artifact,
    list_referrers,
    referrers_tag,
)
from multiarch.registry_api import Manifest, RegistryClient, read_manifest, registry_client
from tests.integration.conftest import registry_files, skopeo_raw, tag_digest

pytestmark = pytest.mark.integration

SPDX = "application/spdx+json"
INTOTO = "application/vnd.in-toto+json"
SBOM = json.dumps({"spdxVersion": "SPDX-2.3", "name": "busybox",
                   "packages": [{"name": "busybox-static"}]}).encode()
PROVENANCE = json.dumps({"_type": "https://in-toto.io/Statement/v1",
                         "predicateType": "https://slsa.dev/provenance/v1"}).encode()


@pytest.fixture
def client(playground) -> Iterator[RegistryClient]:
    with registry_client(playground.address, insecure=True) as opened:
        yield opened


@pytest.fixture
def image(playground, client) -> tuple[str, Manifest]:
    """A repository of its own holding a copy of the busybox base (both platforms); returns
    it and the arm64 platform manifest, the subject the artifacts are attached to."""
    repository = f"referrers/t{uuid.uuid4().hex[:12]}"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--all", "--src-tls-verify=false",
         "--dest-tls-verify=false", f"docker://{playground.base}",
         f"docker://{playground.address}/{repository}:latest"],
        check=True, capture_output=True, timeout=120)
    index = read_manifest(client, repository, "latest")
    assert index is not None
    arm64 = next(m["digest"] for m in json.loads(index.body)["manifests"]
                 if m["platform"]["architecture"] == "arm64")
    subject = read_manifest(client, repository, arm64)
    assert subject is not None
    return repository, subject


def test_artifacts_attach_list_and_fetch_on_a_registry_without_the_referrers_api(
        playground, client, image):
    repository, subject = image
    reference = f"{playground.address}/{repository}"
    tag_before = tag_digest(f"{reference}:latest")

    sbom = attach(client, repository, subject=subject, artifact_type=SPDX, blob=SBOM,
                  blob_media_type=SPDX, annotations={"org.example.platform": "linux/arm64"})
    provenance = attach(client, repository, subject=subject, artifact_type=INTOTO,
                        blob=PROVENANCE, blob_media_type=INTOTO)

    # docker-registry 2.8 has no referrers API: the listing came from the tag schema
    answer = client.request("GET", f"/v2/{repository}/referrers/{subject.digest}",
                            scope=f"repository:{repository}:pull")
    assert answer.status_code == 404
    assert list_referrers(client, repository, subject.digest) == [sbom, provenance]
    assert sbom.annotations == {"org.example.platform": "linux/arm64"}
    assert list_referrers(client, repository, subject.digest, artifact_type=INTOTO) == [
        provenance]
    assert list_referrers(client, repository, subject.digest,
                          artifact_type="application/vnd.example.signature") == []
    assert fetch_artifact(client, repository, sbom) == SBOM
    assert fetch_artifact(client, repository, provenance) == PROVENANCE
    # the tag users pull still holds the same index
    assert tag_digest(f"{reference}:latest") == tag_before


def test_attaching_the_same_artifact_again_lists_it_once_and_stores_nothing_new(
        playground, client, image):
    repository, subject = image
    first = attach(client, repository, subject=subject, artifact_type=SPDX, blob=SBOM,
                   blob_media_type=SPDX)
    attach(client, repository, subject=subject, artifact_type=INTOTO, blob=PROVENANCE,
           blob_media_type=INTOTO)
    stored = registry_files(playground)
    again = attach(client, repository, subject=subject, artifact_type=SPDX, blob=SBOM,
                   blob_media_type=SPDX)
    assert again == first
    assert [r.artifact_type for r in list_referrers(client, repository, subject.digest)] == [
        SPDX, INTOTO]
    assert registry_files(playground) == stored


def test_the_fallback_tag_is_an_oci_index_that_skopeo_reads(playground, client, image):
    repository, subject = image
    sbom = attach(client, repository, subject=subject, artifact_type=SPDX, blob=SBOM,
                  blob_media_type=SPDX, annotations={"org.example.format": "spdx"})
    provenance = attach(client, repository, subject=subject, artifact_type=INTOTO,
                        blob=PROVENANCE, blob_media_type=INTOTO)
    reference = f"{playground.address}/{repository}"
    tag = referrers_tag(subject.digest)
    assert tag == "sha256-" + subject.digest.removeprefix("sha256:")

    index = json.loads(skopeo_raw(f"{reference}:{tag}"))
    assert index["schemaVersion"] == 2 and index["mediaType"] == MEDIA_TYPE_INDEX
    for entry, referrer in zip(index["manifests"], [sbom, provenance], strict=True):
        body = skopeo_raw(f"{reference}@{entry['digest']}")
        manifest = json.loads(body)
        assert entry["mediaType"] == MEDIA_TYPE_MANIFEST
        assert entry["digest"] == referrer.digest == sha256_digest(body)
        assert entry["size"] == len(body)
        assert entry["artifactType"] == manifest["artifactType"] == referrer.artifact_type
        assert entry.get("annotations") == manifest.get("annotations")
        # the artifact manifest as any client sees it: its subject is the platform manifest
        assert manifest["subject"] == {"mediaType": subject.media_type,
                                       "digest": subject.digest, "size": len(subject.body)}
        assert manifest["config"]["mediaType"] == MEDIA_TYPE_EMPTY
        assert manifest["config"]["digest"] == EMPTY_DIGEST
        assert len(manifest["layers"]) == 1
        assert artifact_manifest(client, repository, referrer).body == body


def test_a_subject_without_artifacts_lists_none(client, image):
    repository, subject = image
    assert list_referrers(client, repository, subject.digest) == []


def test_a_referrers_tag_holding_an_image_is_reported_and_left_alone(playground, client, image):
    repository, subject = image
    tag = referrers_tag(subject.digest)
    reference = f"{playground.address}/{repository}"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
         f"docker://{reference}@{subject.digest}", f"docker://{reference}:{tag}"],
        check=True, capture_output=True, timeout=120)
    with pytest.raises(PublishError) as caught:
        attach(client, repository, subject=subject, artifact_type=SPDX, blob=SBOM,
               blob_media_type=SPDX)
    message = str(caught.value)
    assert message.startswith(f"GET {playground.address}/v2/{repository}/manifests/{tag}: ")
    assert "not an OCI image index" in message and "\n" not in message
    assert tag_digest(f"{reference}:{tag}") == subject.digest
    assert list_referrers(client, repository, subject.digest) == []
