"""What we publish, judged by the tools consumers run: `crane validate --remote`, `regctl
artifact tree`, `skopeo copy --all`, and `multiarch verify`, on two registries: Debian's
docker-registry 2.8 (no referrers API: the tag fallback) and go-containerregistry's
registry with the OCI 1.1 referrers API (which lists the config media type as each
referrer's artifactType and sends no OCI-Subject header), for both index formats.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from multiarch.ocispec import sha256_digest
from multiarch.orchestrate import build_and_publish
from multiarch.provenance import PROVENANCE_ARTIFACT_TYPE
from multiarch.referrers import list_referrers
from multiarch.registry_api import registry_client
from multiarch.request import BuildRequest, RunnerOptions
from multiarch.results import BuildResult
from multiarch.sbom import SBOM_MEDIA_TYPE
from multiarch.signing import SIGNATURE_ARTIFACT_TYPE, generate_key
from multiarch.supplychain import SupplyChainOptions
from tests.integration.conftest import EXAMPLE_HELLO

pytestmark = pytest.mark.integration

PLATFORMS = ("linux/amd64", "linux/arm64")


class _Quiet:
    def info(self, msg: str, /) -> None:
        pass


@dataclass(frozen=True)
class Published:
    registry: str
    repository: str
    result: BuildResult
    request: BuildRequest

    @property
    def reference(self) -> str:
        return f"{self.registry}/{self.repository}:1"


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> tuple[Path, Path]:
    return generate_key(tmp_path_factory.mktemp("consumer-key"))


def publish(registry: str, repository: str, *, base: str, key: tuple[Path, Path], work: Path,
            index_format: str = "oci") -> Published:
    """A signed two-platform build with SBOM and provenance; the fixed epoch makes a
    second build of it the same digests (a reproducible rebuild)."""
    request = BuildRequest(source_date_epoch=1_700_000_000,
        image=f"{registry}/{repository}:1", platforms=PLATFORMS, context=str(EXAMPLE_HELLO),
        build_args={"BASE": base}, allow_emulation=True, insecure_registry=True,
        index_format=index_format, runner=RunnerOptions(work_dir=str(work)),
        supply_chain=SupplyChainOptions(sign_key_file=str(key[0])))
    result = build_and_publish(request, log=_Quiet())
    return Published(registry=registry, repository=repository, result=result, request=request)


@pytest.fixture(scope="module", params=["distribution-oci", "referrers-api-oci",
                                        "referrers-api-docker"])
def published(request, playground, referrers_registry, key, tmp_path_factory) -> Published:
    where, _, index_format = request.param.rpartition("-")
    registry = playground.address if where == "distribution" else referrers_registry.address
    return publish(registry, f"consumers/{request.param}", base=playground.base, key=key,
                   work=tmp_path_factory.mktemp("consumer-work"), index_format=index_format)


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=300, env=env,
                          check=False)


def test_crane_validates_the_index_and_every_platform(published, crane):
    done = run(str(crane), "validate", "--insecure", "--remote", published.reference)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout + done.stderr


def test_regctl_lists_every_attestation_in_the_artifact_tree(published, regctl, tmp_path):
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    assert run(str(regctl), "registry", "set", "--tls", "disabled", published.registry,
               env=env).returncode == 0
    done = run(str(regctl), "artifact", "tree", "--format", "{{jsonPretty .}}",
               published.reference, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    tree = done.stdout
    for attestation in published.result.attestations:
        if attestation.subject != "index" and " of " not in attestation.subject:
            assert attestation.digest in tree, (attestation, tree[:3000])


def test_skopeo_copies_all_platforms_byte_for_byte(published, tmp_path):
    """`dir:` keeps every manifest as served (an `oci:` copy would convert a Docker list)."""
    done = run("skopeo", "copy", "--all", "--preserve-digests", "--src-tls-verify=false",
               f"docker://{published.reference}", f"dir:{tmp_path / 'copy'}")
    assert done.returncode == 0, done.stderr
    assert sha256_digest((tmp_path / "copy" / "manifest.json").read_bytes()) == \
        published.result.index_digest
    for platform in published.result.platforms:
        copied = tmp_path / "copy" / f"{platform.digest.split(':')[1]}.manifest.json"
        assert sha256_digest(copied.read_bytes()) == platform.digest


def test_multiarch_verify_passes_with_the_key(published, key):
    from multiarch.cli import main

    assert main(["verify", published.reference, "--key", str(key[1])]) == 0


def counts(published: Published) -> dict[str, int]:
    """Referrers of each kind over all platform manifests."""
    found: dict[str, int] = {}
    with registry_client(published.registry, insecure=True) as client:
        for platform in published.result.platforms:
            for kind in (SBOM_MEDIA_TYPE, PROVENANCE_ARTIFACT_TYPE, SIGNATURE_ARTIFACT_TYPE):
                listed = list_referrers(client, published.repository, platform.digest,
                                        artifact_type=kind)
                found[kind] = found.get(kind, 0) + len(listed)
    return found


@pytest.mark.parametrize("where", ["distribution", "referrers-api"])
def test_publishing_the_same_index_again_adds_no_attestation(
        where, playground, referrers_registry, key, tmp_path):
    registry = playground.address if where == "distribution" else referrers_registry.address
    first = publish(registry, f"consumers/again-{where}", base=playground.base, key=key,
                    work=tmp_path / "w1")
    before = counts(first)
    assert before == {SBOM_MEDIA_TYPE: 2, PROVENANCE_ARTIFACT_TYPE: 2,
                      SIGNATURE_ARTIFACT_TYPE: 2}
    again = publish(registry, f"consumers/again-{where}", base=playground.base, key=key,
                    work=tmp_path / "w2")
    assert again.result.index_digest == first.result.index_digest  # a reproducible rebuild
    assert counts(again) == before
