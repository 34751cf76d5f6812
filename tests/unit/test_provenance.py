"""The SLSA v1 provenance a platform gets: what it records, and what it must never hold."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from multiarch.attest import supply_plan
from multiarch.platforms import Platform
from multiarch.provenance import REDACTED, redact_build_args, statement
from multiarch.rebuild import Fingerprint
from multiarch.request import BuildRequest, RunnerOptions
from multiarch.results import PlatformImage
from multiarch.source import PinnedSource
from multiarch.supplychain import SupplyChainOptions

SHA = "0123456789abcdef0123456789abcdef01234567"
BASE = "registry.example.com/library/debian:bookworm"
BASE_INDEX = "sha256:" + "b" * 64
BASE_ARM64 = "sha256:" + "c" * 64
DIGEST = "sha256:" + "a" * 64


def built(**extra) -> PlatformImage:
    return PlatformImage(
        platform=Platform.parse("linux/arm64"), digest=DIGEST, size=10, emulated=True,
        duration_s=3.0, node_architecture="amd64", node="builder-1",
        started_at=datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC),
        finished_at=datetime(2026, 11, 29, 12, 0, 42, tzinfo=UTC), **extra)


def plan_for(**request_fields):
    fields = {
        "image": "registry.example.com/team/app:1.0",
        "platforms": ("linux/amd64", "linux/arm64"),
        "context": "https://bob:tok3n@git.example.com/team/app.git",
        "build_args": {"BASE": BASE, "GITHUB_TOKEN": "ghp_hidden", "NPM_AUTH": "npm-hidden",
                       "DB_PASS": "pass-hidden", "GREETING": "hello"},
        **request_fields,
    }
    request = BuildRequest(**fields)
    source = PinnedSource(kind="git", location=request.context, revision=SHA, ref="main",
                          epoch=1700000000)
    wanted = Fingerprint(revision=SHA, inputs_digest="sha256:" + "d" * 64,
                         bases={BASE: BASE_INDEX}, final_base=BASE,
                         containerfile_digest="sha256:" + "e" * 64)
    return supply_plan(request, source, wanted, invocation_id="flow-run-1")


def test_the_statement_records_source_bases_runner_and_times():
    plan = plan_for()
    manifest = {"annotations": {"org.opencontainers.image.base.name": BASE,
                                "org.opencontainers.image.base.digest": BASE_ARM64}}
    document = json.loads(statement(plan.provenance, built(), manifest))
    assert document["_type"] == "https://in-toto.io/Statement/v1"
    assert document["predicateType"] == "https://slsa.dev/provenance/v1"
    assert document["subject"] == [{"name": "registry.example.com/team/app",
                                    "digest": {"sha256": "a" * 64}}]
    definition = document["predicate"]["buildDefinition"]
    external = definition["externalParameters"]
    assert external["source"] == {"kind": "git", "uri": "https://git.example.com/team/app.git",
                                  "revision": SHA}
    assert external["containerfile"]["digest"] == {"sha256": "e" * 64}
    assert external["platform"] == "linux/arm64"
    assert definition["internalParameters"] == {
        "runner": "local", "handoff": "shared", "nodeArchitecture": "amd64",
        "node": "builder-1", "emulated": True}
    source, base = definition["resolvedDependencies"]
    assert source == {"uri": f"git+https://git.example.com/team/app.git@{SHA}",
                      "digest": {"gitCommit": SHA}}
    assert base == {"uri": f"docker://{BASE}", "name": BASE, "digest": {"sha256": "b" * 64},
                    "annotations": {"platformManifestDigest": BASE_ARM64}}
    run = document["predicate"]["runDetails"]
    assert run["builder"]["id"] == "https://multiarch-builder.dev/runner/local"
    assert run["metadata"] == {"invocationId": "flow-run-1",
                               "startedOn": "2026-11-29T12:00:00Z",
                               "finishedOn": "2026-11-29T12:00:42Z"}


def test_no_credential_or_secret_build_arg_value_reaches_the_statement():
    plan = plan_for()
    text = statement(plan.provenance, built(), {}).decode()
    for secret in ("tok3n", "bob:", "ghp_hidden", "npm-hidden", "pass-hidden"):
        assert secret not in text
    args = json.loads(text)["predicate"]["buildDefinition"]["externalParameters"]["buildArgs"]
    assert args == {"BASE": BASE, "DB_PASS": REDACTED, "GITHUB_TOKEN": REDACTED,
                    "GREETING": "hello", "NPM_AUTH": REDACTED}


@pytest.mark.parametrize(("name", "secret"), [
    ("API_KEY", True), ("KEY", True), ("DB_PASSWORD", True), ("aws_secret_access_key", True),
    ("MONKEY", False), ("KEYBOARD_LAYOUT", False), ("VERSION", False), ("BASE", False),
])
def test_secret_looking_names_are_redacted(name, secret):
    assert (redact_build_args({name: "v"})[name] == REDACTED) is secret


def test_the_same_inputs_give_the_same_bytes():
    plan = plan_for()
    assert statement(plan.provenance, built(), {}) == statement(plan.provenance, built(), {})


def test_provenance_can_be_turned_off_and_the_sbom_time_is_the_source_epoch():
    plan = plan_for(supply_chain=SupplyChainOptions(provenance=False))
    assert plan.provenance is None
    assert plan.created == datetime.fromtimestamp(1700000000, UTC)
    assert plan.sbom and not plan.signs


def test_a_local_runner_key_is_named_by_path_never_by_value(tmp_path):
    plan = plan_for(supply_chain=SupplyChainOptions(sign_key_file=str(tmp_path / "k")))
    assert plan.sign_key_file == str(tmp_path / "k")
    assert "PRIVATE KEY" not in plan.model_dump_json()


def test_signing_options_are_refused_where_they_cannot_work():
    with pytest.raises(ValueError, match=r"signing_key_secret instead"):
        BuildRequest(image="r.example.com/a:1", platforms=("linux/amd64",),
                     context="https://git.example.com/a.git",
                     runner=RunnerOptions(kind="kubernetes"),
                     supply_chain=SupplyChainOptions(sign_key_file="/k"))
    with pytest.raises(ValueError, match="name the key once"):
        plan_for(supply_chain=SupplyChainOptions(sign_key_file="/k", sign_key_block="b"))
    with pytest.raises(ValueError, match=r"removed: .*--secret id=NAME,env=NAME"):
        SupplyChainOptions(secret_build_args=("NOT-A-NAME",))
