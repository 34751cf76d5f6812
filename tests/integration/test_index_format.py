"""index_format docker against the real registry: a Docker manifest list over Docker
schema 2 manifests of the very blobs the OCI format would push, readable by a consumer,
verified, and up to date on a second `rebuild: if-changed` run."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from multiarch.cli import main as cli_main
from multiarch.ocispec import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_INDEX,
    MEDIA_TYPE_MANIFEST,
)
from multiarch.orchestrate import build_and_publish
from multiarch.request import BuildRequest, RunnerOptions
from multiarch.results import BuildResult
from multiarch.signing import generate_key
from multiarch.supplychain import SupplyChainOptions
from tests.faults.fault_proxy import FaultProxy
from tests.integration.conftest import skopeo_raw, tag_digest

pytestmark = pytest.mark.integration

APP = """\
ARG BASE
FROM ${BASE}
RUN uname -m > /etc/build-arch
"""
PLATFORMS = ("linux/amd64", "linux/arm64")
BLOB_UPLOAD = re.compile(r"^PUT /v2/\S+/blobs/uploads/\S*[?&]digest=(sha256(?::|%3A)[0-9a-f]{64})")


class _Quiet:
    def info(self, msg: str, /) -> None:
        pass


@dataclass(frozen=True)
class Published:
    image: str  # registry/repository, through the counting proxy
    result: BuildResult
    uploads: Counter[str]  # blob digest -> finished uploads during the run
    request: BuildRequest


def request_for(image: str, context: Path, work: Path, base: str, **fields) -> BuildRequest:
    fields = {"rebuild": "if-changed", **fields}
    return BuildRequest(image=f"{image}:1", platforms=PLATFORMS, context=str(context),
                        build_args={"BASE": base}, allow_emulation=True, insecure_registry=True,
                        runner=RunnerOptions(work_dir=str(work)), **fields)


def uploads_seen(proxy: FaultProxy, since: int) -> Counter[str]:
    found = (BLOB_UPLOAD.match(line) for line in proxy.seen[since:])
    return Counter(m.group(1).replace("%3A", ":") for m in found if m and "-> 20" in m.string)


@pytest.fixture(scope="module")
def proxy(playground) -> Iterator[FaultProxy]:
    """No faults: a real proxy in front of the registry that records every request."""
    counting = FaultProxy(upstream=playground.address).start()
    yield counting
    counting.stop()


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("docker-format-app")
    (path / "Containerfile").write_text(APP)
    return path


def publish(proxy: FaultProxy, request: BuildRequest) -> Published:
    since = len(proxy.seen)
    result = build_and_publish(request, log=_Quiet())
    return Published(image=request.image.name, result=result,
                     uploads=uploads_seen(proxy, since), request=request)


@pytest.fixture(scope="module")
def docker_shared(playground, proxy, context, tmp_path_factory) -> Published:
    return publish(proxy, request_for(f"{proxy.address}/tests/docker-format", context,
                                      tmp_path_factory.mktemp("w-shared"), playground.base,
                                      index_format="docker"))


def manifests_of(image: str) -> tuple[dict, list[dict]]:
    listing = json.loads(skopeo_raw(f"{image}:1"))
    return listing, [json.loads(skopeo_raw(f"{image}@{entry['digest']}"))
                     for entry in listing["manifests"]]


def test_the_tag_is_a_manifest_list_of_two_schema2_manifests(docker_shared) -> None:
    listing, manifests = manifests_of(docker_shared.image)
    assert listing["mediaType"] == DOCKER_MANIFEST_LIST
    assert [(e["mediaType"], e["platform"]["architecture"]) for e in listing["manifests"]] \
        == [(DOCKER_MANIFEST, "amd64"), (DOCKER_MANIFEST, "arm64")]
    assert [e["digest"] for e in listing["manifests"]] == \
        [p.digest for p in docker_shared.result.platforms]
    assert tag_digest(f"{docker_shared.image}:1") == docker_shared.result.index_digest
    for manifest in manifests:
        assert manifest["mediaType"] == DOCKER_MANIFEST
        assert manifest["config"]["mediaType"] == DOCKER_CONFIG
        assert {layer["mediaType"] for layer in manifest["layers"]} == {DOCKER_LAYER}
    # the if-changed fingerprint travels in the list
    assert listing["annotations"]["dev.multiarch.inputs.digest"].startswith("sha256:")


def stored_manifests(playground, repository: str) -> list[dict]:
    """Every manifest the registry stores in a repository, tagged or not (its files)."""
    v2 = next(playground.registry.data_dir.rglob("repositories")).parent
    revisions = v2 / "repositories" / repository / "_manifests" / "revisions" / "sha256"
    return [json.loads((v2 / "blobs" / "sha256" / rev.name[:2] / rev.name / "data")
                       .read_bytes()) for rev in revisions.iterdir()]


def test_the_registry_never_received_an_oci_image_manifest(docker_shared, playground) -> None:
    stored = stored_manifests(playground, "tests/docker-format")
    images = [m for m in stored if "layers" in m and "subject" not in m]
    assert len(images) == 2
    assert {m["mediaType"] for m in images} == {DOCKER_MANIFEST}


def test_no_blob_was_uploaded_twice_and_only_new_blobs_were(docker_shared) -> None:
    _, manifests = manifests_of(docker_shared.image)
    twice = {digest: n for digest, n in docker_shared.uploads.items() if n > 1}
    assert not twice, f"blobs uploaded more than once: {twice}"
    image_blobs = {b["digest"] for m in manifests for b in [m["config"], *m["layers"]]}
    # the configs and the RUN layers are new; the base's layers were mounted or known
    assert {m["config"]["digest"] for m in manifests} <= set(docker_shared.uploads)
    assert set(docker_shared.uploads) - image_blobs, "attestation blobs were uploaded too"


def test_a_consumer_pulls_every_platform_with_skopeo(docker_shared, tmp_path) -> None:
    import subprocess

    subprocess.run(["skopeo", "copy", "--quiet", "--all", "--src-tls-verify=false",
                    f"docker://{docker_shared.image}:1", f"oci:{tmp_path / 'pulled'}:app"],
                   check=True, capture_output=True, timeout=300)
    pulled = json.loads((tmp_path / "pulled" / "index.json").read_text())
    index_digest = pulled["manifests"][0]["digest"].removeprefix("sha256:")
    index = json.loads((tmp_path / "pulled" / "blobs" / "sha256" / index_digest).read_text())
    assert len(index["manifests"]) == 2


def test_multiarch_verify_passes(docker_shared, capsys) -> None:
    assert cli_main(["verify", f"{docker_shared.image}:1", "--insecure-registry"]) == 0, \
        capsys.readouterr().out


def test_a_second_if_changed_run_is_up_to_date(docker_shared, proxy) -> None:
    again = publish(proxy, docker_shared.request)
    assert again.result.up_to_date
    assert again.result.index_digest == docker_shared.result.index_digest
    assert tag_digest(f"{docker_shared.image}:1") == docker_shared.result.index_digest
    assert not again.uploads


def test_the_oci_default_names_the_same_blobs_with_oci_manifests(
        docker_shared, playground, proxy, context, tmp_path) -> None:
    oci = publish(proxy, request_for(f"{proxy.address}/tests/oci-format", context,
                                     tmp_path / "w", playground.base))
    listing, manifests = manifests_of(oci.image)
    assert listing["mediaType"] == MEDIA_TYPE_INDEX
    assert {m["mediaType"] for m in manifests} == {MEDIA_TYPE_MANIFEST}
    _, docker = manifests_of(docker_shared.image)
    blobs = [[(b["digest"], b["size"]) for b in [m["config"], *m["layers"]]]
             for m in manifests]
    assert blobs == [[(b["digest"], b["size"]) for b in [m["config"], *m["layers"]]]
                     for m in docker]


def test_registry_handoff_publishes_signed_docker_manifests_without_a_blob_twice(
        playground, proxy, context, tmp_path) -> None:
    """The builds pushed their blobs; publish PUTs the Docker manifests and the list, and
    signs them: the signatures are over the Docker manifests' bytes."""
    secret, public = generate_key(tmp_path / "keys")
    request = request_for(f"{proxy.address}/tests/docker-registry-handoff", context,
                          tmp_path / "w", playground.base, index_format="docker",
                          handoff="registry", rebuild="always",
                          supply_chain=SupplyChainOptions(sign_key_file=str(secret)))
    since = len(proxy.seen)
    published = publish(proxy, request)
    publish_lines = [line for line in proxy.seen[since:]
                     if re.match(r"PUT /v2/\S+/manifests/sha256:", line)]
    listing, manifests = manifests_of(published.image)
    assert listing["mediaType"] == DOCKER_MANIFEST_LIST
    assert {m["mediaType"] for m in manifests} == {DOCKER_MANIFEST}
    for entry in listing["manifests"]:
        assert any(entry["digest"] in line for line in publish_lines)
    twice = {digest: n for digest, n in published.uploads.items() if n > 1}
    assert not twice, f"blobs uploaded more than once: {twice}"
    assert cli_main(["verify", f"{published.image}:1", "--insecure-registry",
                     "--key", str(public)]) == 0
