"""SBOM, provenance and signatures against the real registry (docker-registry 2.8, no
referrers API: the tag fallback), checked by `multiarch verify` and by skopeo's own
containers policy."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from multiarch import referrers
from multiarch.cli import main
from multiarch.orchestrate import build_and_publish
from multiarch.provenance import PROVENANCE_ARTIFACT_TYPE
from multiarch.registry_api import registry_client
from multiarch.request import BuildRequest, RunnerOptions
from multiarch.sbom import SBOM_MEDIA_TYPE, sbom_packages
from multiarch.signing import SIGNATURE_ARTIFACT_TYPE, generate_key
from multiarch.supplychain import SupplyChainOptions
from tests.integration.conftest import skopeo_raw, tag_digest
from tests.integration.git_repos import git, make_repo

pytestmark = pytest.mark.integration

CONTAINERFILE = """\
ARG BASE
FROM ${BASE}
ARG API_TOKEN
RUN echo built > /etc/built
"""
TOKEN = "tok-never-shown-4711"
PLATFORMS = ("linux/amd64", "linux/arm64")


class _Quiet:
    def info(self, msg: str, /) -> None:
        pass


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[Path, Path]:
    return generate_key(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def signed(playground, git_daemon, keys, tmp_path_factory):
    """One signed two-platform build from a git repository, with a secret build arg."""
    root = tmp_path_factory.mktemp("supply")
    url = make_repo(git_daemon, root / "repo", CONTAINERFILE)
    revision = git("rev-parse", "HEAD", cwd=root / "repo").strip()
    request = BuildRequest(
        image=f"{playground.address}/tests/signed:v1", tags=("latest",), platforms=PLATFORMS,
        context=url, build_args={"BASE": playground.base, "API_TOKEN": TOKEN},
        allow_emulation=True, insecure_registry=True,
        runner=RunnerOptions(work_dir=str(root / "work")),
        supply_chain=SupplyChainOptions(sign_key_file=str(keys[0])),
    )
    result = build_and_publish(request, log=_Quiet())
    return request, result, revision


def attachments(request, platform_digest: str, artifact_type: str) -> list[bytes]:
    image = request.image
    with registry_client(image.registry, insecure=True) as client:
        found = referrers.list_referrers(client, image.repository, platform_digest,
                                         artifact_type=artifact_type)
        return [referrers.fetch_artifact(client, image.repository, r) for r in found]


def test_a_signed_build_verifies_with_its_key(signed, keys, capsys):
    request, result, _ = signed
    kinds = {(a.subject, a.kind) for a in result.attestations}
    for platform in PLATFORMS:
        assert {(platform, "sbom"), (platform, "provenance"), (platform, "signature")} <= kinds
    assert ("index", "signature") in kinds
    assert result.signed_by and len(result.signed_by) == 40

    assert main(["verify", str(request.image), "--key", str(keys[1])]) == 0
    out = capsys.readouterr().out
    assert "verified: nothing missing" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(
        ("index", "linux/"))}
    assert set(rows) == {"index", "linux/amd64", "linux/arm64/v8"}
    assert all(" ok (key " in row for row in rows.values())
    assert all(row.count(" ok sha256:") == 2 for name, row in rows.items() if name != "index")


def test_another_key_does_not_verify(signed, tmp_path, capsys):
    request, _, _ = signed
    _, other = generate_key(tmp_path / "other")
    assert main(["verify", f"{request.image.name}:latest", "--key", str(other)]) == 1
    out = capsys.readouterr().out
    assert "INVALID" in out and "NOT VERIFIED" in out


def test_the_sbom_lists_busybox_for_each_platform(signed):
    request, result, _ = signed
    for platform in result.platforms:
        (document,) = attachments(request, platform.digest, SBOM_MEDIA_TYPE)
        assert json.loads(document)["spdxVersion"] == "SPDX-2.3"
        assert "busybox" in sbom_packages(document)


def test_provenance_names_the_pinned_revision_and_the_base_digests(signed, playground):
    request, result, revision = signed
    base_index = tag_digest(playground.base)
    base_entries = {entry["platform"]["architecture"]: entry["digest"]
                    for entry in json.loads(skopeo_raw(playground.base))["manifests"]}
    for platform in result.platforms:
        (body,) = attachments(request, platform.digest, PROVENANCE_ARTIFACT_TYPE)
        statement = json.loads(body)
        assert statement["subject"][0]["digest"]["sha256"] == platform.digest[7:]
        definition = statement["predicate"]["buildDefinition"]
        assert definition["externalParameters"]["source"]["revision"] == revision
        assert definition["internalParameters"]["emulated"] is platform.emulated
        source, base = definition["resolvedDependencies"]
        assert source["digest"] == {"gitCommit": revision}
        assert base["name"] == playground.base
        assert base["digest"] == {"sha256": base_index[7:]}
        assert base["annotations"]["platformManifestDigest"] == \
            base_entries[platform.platform.architecture]


def test_no_credential_appears_in_any_attestation(signed, keys):
    request, result, _ = signed
    secret_key = keys[0].read_text()
    key_body = "".join(secret_key.splitlines()[2:6])
    for item in result.attestations:
        artifact_type = {"sbom": SBOM_MEDIA_TYPE, "provenance": PROVENANCE_ARTIFACT_TYPE,
                         "signature": SIGNATURE_ARTIFACT_TYPE}[item.kind]
        for body in attachments(request, item.subject_digest, artifact_type):
            text = body.decode("utf-8", errors="replace")
            assert TOKEN not in text
            assert key_body not in text
            assert "PRIVATE KEY" not in text


def policy_files(tmp_path: Path, registry: str, public: Path, lookaside: Path) -> list[str]:
    """A containers policy that requires a signature by this key for the tests repos, and
    registries.d pointing skopeo at the exported signatures."""
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {f"{registry}/tests": [{
                "type": "signedBy", "keyType": "GPGKeys", "keyPath": str(public),
                "signedIdentity": {"type": "matchRepository"}}]},
            "oci": {"": [{"type": "insecureAcceptAnything"}]},
        },
    }))
    registries_d = tmp_path / "registries.d"
    registries_d.mkdir()
    (registries_d / "multiarch.yaml").write_text(
        f"docker:\n  {registry}:\n    lookaside: file://{lookaside}\n")
    return ["--policy", str(policy), "--registries.d", str(registries_d)]


def skopeo_copy(options: list[str], reference: str, destination: Path):
    """Every platform, as `--all` does: skopeo applies the policy to each platform's
    manifest. (`--multi-arch index-only` skips the policy in skopeo 1.9: nothing is
    checked.)"""
    return subprocess.run(
        ["skopeo", *options, "copy", "--src-tls-verify=false", "--remove-signatures",
         "--all", f"docker://{reference}", f"oci:{destination}:x"],
        capture_output=True, text=True, timeout=120, check=False)


def test_skopeo_policy_accepts_the_signed_image_and_rejects_an_unsigned_one(
        signed, keys, playground, tmp_path):
    request, _, _ = signed
    lookaside = tmp_path / "lookaside"
    assert main(["verify", str(request.image), "--key", str(keys[1]),
                 "--export-lookaside", str(lookaside)]) == 0
    unsigned = f"{playground.address}/tests/unsigned:v1"
    subprocess.run(["skopeo", "copy", "--all", "--src-tls-verify=false",
                    "--dest-tls-verify=false", f"docker://{playground.base}",
                    f"docker://{unsigned}"], check=True, capture_output=True, timeout=120)
    options = policy_files(tmp_path, playground.address, keys[1], lookaside)

    accepted = skopeo_copy(options, str(request.image), tmp_path / "signed-copy")
    assert accepted.returncode == 0, accepted.stderr
    rejected = skopeo_copy(options, unsigned, tmp_path / "unsigned-copy")
    assert rejected.returncode != 0, rejected.stderr
    assert "A signature was required, but no signature exists" in rejected.stderr


def test_retagging_another_index_under_the_tag_fails_verify(signed, keys, playground, capsys):
    """Last in this module: it moves the fixture's `latest` tag."""
    request, result, _ = signed
    latest = f"{request.image.name}:latest"
    subprocess.run(["skopeo", "copy", "--all", "--src-tls-verify=false",
                    "--dest-tls-verify=false", f"docker://{playground.base}",
                    f"docker://{latest}"], check=True, capture_output=True, timeout=120)
    assert tag_digest(latest) != result.index_digest
    assert main(["verify", latest, "--key", str(keys[1])]) == 1
    out = capsys.readouterr().out
    assert "index: not signed by key" in out
    assert "no valid SBOM" in out and "no valid provenance" in out
    # the digest that was published still verifies
    assert main(["verify", f"{request.image.name}@{result.index_digest}",
                 "--key", str(keys[1])]) == 0


def test_the_flow_signs_with_a_secret_block_and_lists_every_referrer(
        playground, prefect_server, keys, tmp_path, capsys):
    """Through Prefect: the key from a Secret block, only the block's name in the run's
    parameters, the referrers in the summary artifact."""
    from prefect.blocks.system import Secret

    from flows.build import build_multiarch_image
    from tests.integration.conftest import EXAMPLE_HELLO
    from tests.integration.prefect_queries import artifact_data

    block = "signing-test-key"
    Secret(value=keys[0].read_text()).save(block, overwrite=True)
    image = f"{playground.address}/tests/signed-by-block:1"
    state = build_multiarch_image(
        image=image, platforms=list(PLATFORMS), context=str(EXAMPLE_HELLO),
        build_args={"BASE": playground.base}, allow_emulation=True, insecure_registry=True,
        runner={"work_dir": str(tmp_path / "work")},
        supply_chain={"sign_key_block": block}, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result.signed_by
    markdown = next(d for d in artifact_data(state.state_details.flow_run_id)
                    if d.startswith("# Published"))
    assert f"signed with GPG key `{result.signed_by}`" in markdown
    assert len(result.attestations) == 2 * 3 + 2 * 2 + 1  # per platform: SBOM, provenance,
    for item in result.attestations:  # signature; a signature of each attestation; the index
        assert f"`{item.digest}`" in markdown
    assert main(["verify", image, "--key", str(keys[1])]) == 0, capsys.readouterr().out


def passphrase_key(directory: Path) -> Path:
    """An armored secret key protected by a passphrase (which nobody will type)."""
    home = directory / "gnupg"
    home.mkdir(mode=0o700, parents=True)
    env = {"GNUPGHOME": str(home), "PATH": "/usr/bin:/bin"}
    gpg = ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "typed-by-hand"]
    subprocess.run([*gpg, "--quick-gen-key", "protected", "ed25519", "sign", "never"],
                   env=env, check=True, capture_output=True)
    exported = subprocess.run([*gpg, "--armor", "--export-secret-keys"], env=env, check=True,
                              capture_output=True).stdout
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
    path = directory / "protected.key"
    path.write_bytes(exported)
    return path


@pytest.mark.parametrize(("make_key", "message"), [
    (lambda d, keys: d / "missing.key", "supply_chain.sign_key_file: cannot read"),
    (lambda d, keys: keys[1], "is not an armored GPG secret key"),
    (lambda d, keys: passphrase_key(d), "cannot sign"),
])
def test_a_bad_signing_key_is_refused_before_any_build(make_key, message, playground, keys,
                                                       tmp_path):
    from multiarch.errors import ConfigurationError

    key = make_key(tmp_path, keys)
    image = f"{playground.address}/tests/bad-key:1"
    (tmp_path / "Containerfile").write_text("ARG BASE\nFROM ${BASE}\n")
    request = BuildRequest(
        image=image, platforms=PLATFORMS, context=str(tmp_path), allow_emulation=True,
        insecure_registry=True, runner=RunnerOptions(work_dir=str(tmp_path / "work")),
        build_args={"BASE": playground.base}, containerfile="Containerfile",
        supply_chain=SupplyChainOptions(sign_key_file=str(key)))
    with pytest.raises(ConfigurationError, match=message) as refused:
        build_and_publish(request, log=_Quiet())
    assert "\n" not in str(refused.value)
    assert tag_digest(image) is None
    assert not (tmp_path / "work" / "builds").exists()
