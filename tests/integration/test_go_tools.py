"""The Go tools of the suite (tests/tools, devtools/gotools.py) against real registries.

crane and regctl are what consumers of our images run; the referrers registry is
go-containerregistry's, with the OCI 1.1 referrers API that Debian's docker-registry 2.8
lacks. Here each one is shown to work: crane pushes an image index the test writes as an
OCI layout and copies the busybox base between the two registries; an artifact with a
`subject` is attached and listed through `GET /v2/<repo>/referrers/<digest>` and by regctl;
`crane validate --remote` passes the base in the distribution registry and rejects an index
entry whose variant the image's config does not have. Never skipped: a missing `go` fails.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devtools import gotools, procfs, supervisor
from devtools.gotools import cache_root, ensure_tool
from tests.cluster.pki import Authority
from tests.sessions import REPO_ROOT
from tests.tools.fixtures import (
    regctl_env,
    running_pid,
    start_referrers_registry,
    stop_referrers_registry,
)

pytestmark = pytest.mark.integration

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
ARTIFACT_TYPE = "application/vnd.multiarch.test.note+json"
PLATFORMS = [("amd64", None, None), ("arm64", "v8", "v8")]


def run(
    *argv: str | Path, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(arg) for arg in argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    if check:
        assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
    return done


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, data: bytes, **extra: object) -> dict:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data), **extra}


def canonical(document: dict) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Layout:
    """An OCI layout the test wrote: its index and the platform manifests in it."""

    path: Path
    index_digest: str
    manifests: dict[str, str]  # "linux/arm64" -> manifest digest


def write_layout(path: Path, platforms: list[tuple[str, str | None, str | None]]) -> Layout:
    """One image per (architecture, variant in its config, variant in the index entry),
    each a one-file layer, under an image index; written by hand so every digest is ours."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes) -> None:
        (blobs / digest_of(data).split(":", 1)[1]).write_bytes(data)

    entries, manifests = [], {}
    for arch, config_variant, entry_variant in platforms:
        tar_bytes = io.BytesIO()
        with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
            content = f"hello from {arch}\n".encode()
            info = tarfile.TarInfo("hello.txt")
            info.size, info.mtime = len(content), 0
            tar.addfile(info, io.BytesIO(content))
        layer = gzip.compress(tar_bytes.getvalue(), mtime=0)
        config = {
            "architecture": arch,
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [digest_of(tar_bytes.getvalue())]},
            "config": {},
        }
        if config_variant:
            config["variant"] = config_variant
        config_bytes = canonical(config)
        manifest = canonical(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": descriptor(OCI_CONFIG, config_bytes),
                "layers": [descriptor(OCI_LAYER, layer)],
            }
        )
        for data in (layer, config_bytes, manifest):
            blob(data)
        platform = {"architecture": arch, "os": "linux"}
        if entry_variant:
            platform["variant"] = entry_variant
        entries.append(descriptor(OCI_MANIFEST, manifest, platform=platform))
        manifests[f"linux/{arch}"] = digest_of(manifest)
    index = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    blob(index)
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (path / "index.json").write_bytes(
        canonical(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [descriptor(OCI_INDEX, index)],
            }
        )
    )
    return Layout(path=path, index_digest=digest_of(index), manifests=manifests)


def push_blob(client: httpx.Client, repository: str, data: bytes) -> None:
    started = client.post(f"/v2/{repository}/blobs/uploads/")
    assert started.status_code == 202, started.text
    location = started.headers["Location"]
    done = client.put(
        location,
        params={"digest": digest_of(data)},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert done.status_code == 201, done.text


def attach_note(client: httpx.Client, repository: str, subject: dict, text: str) -> str:
    """An OCI 1.1 artifact (empty config, one layer, `subject`) pushed by its digest."""
    note = text.encode()
    for data in (EMPTY_JSON, note):
        push_blob(client, repository, data)
    manifest = canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": descriptor(OCI_EMPTY, EMPTY_JSON),
            "layers": [descriptor("text/plain", note)],
            "subject": subject,
            "annotations": {"org.opencontainers.image.title": "note.txt"},
        }
    )
    digest = digest_of(manifest)
    put = client.put(
        f"/v2/{repository}/manifests/{digest}",
        content=manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert put.status_code == 201, put.text
    # go-containerregistry's registry does not say it processed the subject (OCI 1.1 asks
    # for this header): a client must list the referrers to know.
    assert "OCI-Subject" not in put.headers
    return digest


@pytest.fixture
def pushed(referrers_registry, crane, tmp_path) -> tuple[str, Layout]:
    """An amd64 + arm64/v8 index of our own, pushed by crane from an OCI layout."""
    layout = write_layout(tmp_path / "layout", PLATFORMS)
    repository = f"gotools/t{uuid.uuid4().hex[:12]}"
    reference = f"{referrers_registry.address}/{repository}:1"
    # Without --index: the layout's one entry, our index. (--index would push index.json
    # itself as a further index around it.)
    done = run(crane, "push", "--insecure", layout.path, reference)
    assert done.stdout.strip() == f"{reference.rsplit(':', 1)[0]}@{layout.index_digest}"
    return repository, layout


def test_the_tools_are_built_into_the_cache_outside_the_clone(crane, regctl, referrers_registry):
    binary = ensure_tool("referrers_registry")
    for path in (crane, regctl, binary):
        assert path.is_file(), path
        assert path.is_relative_to(cache_root()), path
        assert not path.resolve().is_relative_to(REPO_ROOT), path
    assert run(crane, "version").stdout.strip() == "v0.22.1"
    assert "VCSTag:     v0.11.7" in run(regctl, "version").stdout
    assert ensure_tool("crane") == crane  # a second look builds nothing


def test_referrers_are_listed_by_the_api_and_by_regctl(
    referrers_registry, regctl, pushed, tmp_path
):
    repository, layout = pushed
    arm64 = layout.manifests["linux/arm64"]
    with httpx.Client(base_url=referrers_registry.url, trust_env=False, timeout=30) as client:
        subject = client.get(
            f"/v2/{repository}/manifests/{arm64}", headers={"Accept": OCI_MANIFEST}
        )
        assert subject.status_code == 200
        note = attach_note(
            client, repository, descriptor(OCI_MANIFEST, subject.content), "a note on arm64"
        )
        listed = client.get(f"/v2/{repository}/referrers/{arm64}")
        assert listed.status_code == 200, listed.text
        assert listed.headers["Content-Type"] == OCI_INDEX
        referrers = listed.json()["manifests"]
        assert [r["digest"] for r in referrers] == [note]
        # Its artifactType is the config's media type, not the manifest's artifactType.
        assert referrers[0]["artifactType"] == OCI_EMPTY
        assert referrers[0]["annotations"] == {"org.opencontainers.image.title": "note.txt"}
        nothing = client.get(f"/v2/{repository}/referrers/{layout.manifests['linux/amd64']}")
        assert nothing.json()["manifests"] == []

    env = regctl_env(tmp_path / "regctl-home")
    run(regctl, "registry", "set", "--tls", "disabled", referrers_registry.address, env=env)
    subject_ref = f"{referrers_registry.address}/{repository}@{arm64}"
    found = run(
        regctl, "artifact", "list", "--format", "{{jsonPretty .Descriptors}}", subject_ref, env=env
    )
    assert [d["digest"] for d in json.loads(found.stdout)] == [note]

    # regctl attaches one too: both are listed, and the tree of the index shows them
    # under the arm64 manifest.
    (tmp_path / "second.txt").write_text("a second note\n")
    run(
        regctl,
        "artifact",
        "put",
        "--subject",
        subject_ref,
        "--artifact-type",
        ARTIFACT_TYPE,
        "--file",
        tmp_path / "second.txt",
        "--file-media-type",
        "text/plain",
        env=env,
    )
    found = run(
        regctl, "artifact", "list", "--format", "{{jsonPretty .Descriptors}}", subject_ref, env=env
    )
    listed = json.loads(found.stdout)
    assert len(listed) == 2 and note in {d["digest"] for d in listed}
    tree = run(
        regctl,
        "artifact",
        "tree",
        "--format",
        "{{jsonPretty .}}",
        f"{referrers_registry.address}/{repository}:1",
        env=env,
    )
    children = {
        child["platform"]["architecture"]: child for child in json.loads(tree.stdout)["child"]
    }
    assert {r["reference"]["Digest"] for r in children["arm64"]["referrer"]} == {
        d["digest"] for d in listed
    }
    assert "referrer" not in children["amd64"]
    # The plain tree prints each referrer's artifactType as the registry lists it: the
    # config's media type.
    text = run(
        regctl, "artifact", "tree", f"{referrers_registry.address}/{repository}:1", env=env
    ).stdout
    assert f"{note}: {OCI_EMPTY}" in text, text
    assert not (tmp_path / "regctl-home" / ".regctl").exists()
    assert (tmp_path / "regctl-home" / "regctl.json").exists()


def test_crane_copies_the_base_between_the_registries(playground, referrers_registry, crane):
    target = f"{referrers_registry.address}/gotools/busybox:latest"
    run(crane, "copy", "--insecure", playground.base, target)
    source = run(crane, "digest", "--insecure", playground.base).stdout.strip()
    assert run(crane, "digest", "--insecure", target).stdout.strip() == source


def test_crane_validates_the_base_in_the_distribution_registry(playground, crane):
    done = run(crane, "validate", "--insecure", "--remote", playground.base)
    assert done.stdout.strip() == f"PASS: {playground.base}", done.stdout + done.stderr


@pytest.mark.parametrize(
    ("config_variant", "entry_variant", "verdict"),
    [
        ("v8", "v8", None),
        (None, "v8", "mismatched Variant:  != v8"),  # the entry adds one: rejected
        ("v8", None, "mismatched Variant: v8 != "),  # the entry leaves it out: rejected too
    ],
    ids=["both-v8", "entry-only", "config-only"],
)
def test_crane_validate_wants_the_entry_variant_to_be_the_configs(
    referrers_registry, crane, tmp_path, config_variant, entry_variant, verdict
):
    """`crane validate` compares each index entry's platform with its image's config, the
    variant exactly: "arm64/v8" on one side and nothing on the other fails either way."""
    layout = write_layout(
        tmp_path / "layout", [("amd64", None, None), ("arm64", config_variant, entry_variant)]
    )
    reference = f"{referrers_registry.address}/gotools/variant-{uuid.uuid4().hex[:8]}:1"
    run(crane, "push", "--insecure", layout.path, reference)
    done = run(crane, "validate", "--insecure", "--remote", reference, check=False)
    if verdict is None:
        assert (done.returncode, done.stdout) == (0, f"PASS: {reference}\n"), done.stderr
        return
    assert done.returncode == 1
    arm64 = layout.manifests["linux/arm64"]
    assert done.stdout == (
        f"FAIL: {reference}: validating children: failed to validate image "
        f"platform[1]({arm64}): {verdict}\n"
    )


def test_a_stopped_registry_leaves_no_process(tmp_path):
    registry = start_referrers_registry(tmp_path / "state")
    pid = running_pid(registry)
    assert pid is not None and procfs.is_alive(pid)
    assert "serving the registry (referrers API on)" in registry.log_file.read_text()
    assert stop_referrers_registry(registry).stopped
    assert not procfs.is_alive(pid)
    assert procfs.group_members(pid) == []
    assert not supervisor.port_answers(registry.host, registry.port)


def test_the_registry_serves_https_with_a_given_certificate(tmp_path, crane):
    authority = Authority(tmp_path / "pki")
    server = authority.issue("server", common_name="127.0.0.1", server_ips=("127.0.0.1",))
    registry = start_referrers_registry(
        tmp_path / "state", tls_cert=server.cert, tls_key=server.key
    )
    try:
        assert registry.url.startswith("https://")
        answer = httpx.get(f"{registry.url}/v2/", verify=str(authority.cert_path), trust_env=False)
        assert answer.status_code == 200
        layout = write_layout(tmp_path / "layout", PLATFORMS)
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "SSL_CERT_FILE": str(authority.cert_path),
        }
        target = f"{registry.address}/gotools/tls:1"
        run(crane, "push", layout.path, target, env=env)
        assert run(crane, "digest", target, env=env).stdout.strip() == layout.index_digest
    finally:
        stop_referrers_registry(registry)


def test_a_missing_go_is_an_error_that_names_what_to_install(monkeypatch):
    monkeypatch.setattr(gotools.shutil, "which", lambda name: None)
    monkeypatch.setattr(gotools, "FALLBACK_GO", Path("/nonexistent/go"))
    with pytest.raises(gotools.GoToolError, match=r"`go` was not found: install Go 1\.26"):
        ensure_tool("crane")


def test_a_build_is_keyed_on_its_inputs_and_never_leaves_a_partial_binary(tmp_path, monkeypatch):
    """Our program built into an empty cache (Go's build cache makes it quick): a stale
    `.partial` directory of an interrupted build goes, and a changed main.go is a new key."""
    # Go's build cache defaults to $XDG_CACHE_HOME/go-build: keep the real one.
    gocache = run(gotools.find_go(), "env", "GOCACHE").stdout.strip()
    monkeypatch.setenv("GOCACHE", gocache)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    source = tmp_path / "src"
    shutil.copytree(gotools.TOOLS["referrers_registry"].source, source)
    monkeypatch.setitem(
        gotools.TOOLS, "referrers_registry", gotools.Tool("referrers_registry", source=source)
    )
    target = gotools.tool_path("referrers_registry")
    assert target.is_relative_to(tmp_path / "cache" / "multiarch-builder" / "gotools")
    stale = target.parent / ".partial-1"
    stale.mkdir(parents=True)
    (stale / "referrers_registry").write_bytes(b"half a binary")
    assert ensure_tool("referrers_registry", log=False) == target
    assert not stale.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == [
        ".lock",
        "build-seconds",
        "referrers_registry",
    ]
    usage = run(target, "-h", check=False)
    assert "-addr" in usage.stderr and "-tls-cert" in usage.stderr
    with (source / "main.go").open("a") as main_go:
        main_go.write("\n// changed\n")
    assert gotools.tool_path("referrers_registry") != target
