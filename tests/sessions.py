"""The session's real components, one instance each for the whole test session.

A registry on a free port under a temporary directory, QEMU, the busybox base image, the
Debian 12 base and the builder image of this checkout (restored from `.local/` caches,
built when an input changed), and a Prefect test server on SQLite, owned by the tests:
the suite needs no `make demo` first and leaves nothing running behind it. Registered
once in tests/conftest.py, so every test directory shares the same instances (a fixture
imported into a second conftest would be a second, independent instance).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.builder_image import cached_builder
from devtools.debian_base import ensure_debian_base
from devtools.playground import base_image, ensure_base_image
from devtools.registry import LocalRegistry, free_port, start_registry, stop_registry
from multiarch.emulation import ensure_emulation

REPO_ROOT = Path(__file__).resolve().parents[1]

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
def prefect_server() -> Iterator[str]:
    """One Prefect test server (SQLite) for the session; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


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
