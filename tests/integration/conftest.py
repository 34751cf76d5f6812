"""Real components for integration tests: a registry, QEMU, the base image, Prefect.

Everything is started once per session and owned by the tests (a registry on a free
port under a temporary directory, a Prefect test server on SQLite), so the suite needs
no `make demo` first and leaves nothing running behind it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.builder_image import cached_builder
from devtools.debian_base import ensure_debian_base
from devtools.playground import base_image, ensure_base_image
from devtools.registry import LocalRegistry, free_port, start_registry, stop_registry
from multiarch.emulation import ensure_emulation

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_HELLO = REPO_ROOT / "examples" / "hello"

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@dataclass(frozen=True)
class Playground:
    registry: LocalRegistry
    base: str
    state_dir: Path

    @property
    def address(self) -> str:
        return self.registry.address


@pytest.fixture(scope="session")
def playground(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Playground]:
    state_dir = tmp_path_factory.mktemp("playground")
    registry = start_registry(state_dir=state_dir / "registry", port=free_port())
    try:
        ensure_emulation("arm64")
        log = logging.getLogger("tests.playground")
        ensure_base_image(registry.address, state_dir=state_dir, log=log)
        yield Playground(registry=registry, base=base_image(registry.address), state_dir=state_dir)
    finally:
        stop_registry(state_dir=state_dir / "registry")


@pytest.fixture(scope="session")
def debian_base(playground: Playground) -> str:
    """The Debian 12 base (amd64 + arm64) in the session registry; the mmdebstrap tars are
    cached under `<repo>/.local/debian-base/`, shared with `make builder`."""
    return ensure_debian_base(
        playground.address,
        state_dir=playground.state_dir,
        cache_dir=REPO_ROOT / ".local" / "debian-base",
        log=logging.getLogger("tests.debian_base"),
    )


@pytest.fixture(scope="session")
def builder_image(playground: Playground) -> str:
    """The builder image of this checkout (deployments/builder/Containerfile) in the
    session registry; returns its reference.

    Restored from `<repo>/.local/images/` (an OCI layout keyed on every input) in seconds;
    built only when an input changed, where a code change only reruns the wheel's layer
    (devtools/builder_image.py, cached_builder). The Debian base tars are shared with
    `make builder` under `<repo>/.local/debian-base/`.
    """
    return cached_builder(
        playground.address,
        images_dir=REPO_ROOT / ".local" / "images",
        base_cache_dir=REPO_ROOT / ".local" / "debian-base",
        log=logging.getLogger("tests.builder_image"),
    )


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """One Prefect test server (SQLite) for the session; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


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
