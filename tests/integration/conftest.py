"""Helpers of the integration tests: reading what a build pushed to the registry.

The session's real components (registry, QEMU, base images, Prefect) are fixtures of
tests/sessions.py, shared by every test directory.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.sessions import REPO_ROOT, Playground

__all__ = ["REPO_ROOT", "Playground"]

EXAMPLE_HELLO = REPO_ROOT / "examples" / "hello"

@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def skopeo_raw(reference: str) -> bytes:
    return subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout


def tag_digest(reference: str) -> str | None:
    """The digest a tag resolves to now, or None if it does not exist."""
    done = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        return None
    import hashlib

    return "sha256:" + hashlib.sha256(done.stdout).hexdigest()


def read_image_file(reference: str, path: str, *, scratch: Path) -> bytes:
    """A file's content in a pushed image, read from its layers (top layer wins)."""
    layout = scratch / "pulled"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            f"docker://{reference}",
            f"oci:{layout}:pulled",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    index = json.loads((layout / "index.json").read_text())
    manifest = _blob_json(layout, index["manifests"][0]["digest"])
    member = path.lstrip("/")
    for layer in reversed(manifest["layers"]):
        with tarfile.open(_blob(layout, layer["digest"])) as tar:
            names = {name.lstrip("./"): name for name in tar.getnames()}
            if member in names:
                extracted = tar.extractfile(names[member])
                assert extracted is not None
                return extracted.read()
    raise AssertionError(f"{path} is not in {reference}")


def file_in_dir_copy(directory: Path, path: str) -> bytes:
    """A file's content in a `skopeo copy ... dir:DIRECTORY` of one image (top layer wins)."""
    manifest = json.loads((directory / "manifest.json").read_text())
    for layer in reversed(manifest["layers"]):
        with tarfile.open(directory / layer["digest"].split(":", 1)[1]) as tar:
            for member in tar.getmembers():
                if member.name.lstrip("./") == path.lstrip("/") and member.isfile():
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    return extracted.read()
    raise AssertionError(f"{path} is not in the image copied to {directory}")


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def _blob_json(layout: Path, digest: str) -> dict:
    return json.loads(_blob(layout, digest).read_text())


def registry_files(playground: Playground) -> set[str]:
    """Every file the registry stores: a push of anything adds to this set.

    Upload sessions are left out: the preflight push check opens one and cancels it, and
    distribution 2.8 keeps a hash-state file of a cancelled session until it purges it.
    """
    root = playground.registry.data_dir
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and "_uploads" not in p.parts}
