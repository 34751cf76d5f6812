"""Integration tests for the local demo environment: registry, busybox context, QEMU.

These use the real tools (docker-registry, apt/dpkg-deb, binfmt_misc as root) and the
Debian mirrors; they are never skipped, so a missing tool fails with its own message.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.busybox import ELF_MACHINES, elf_machine, prepare_busybox_context
from devtools.registry import (
    LocalRegistry,
    free_port,
    start_registry,
    stop_registry,
)
from multiarch.emulation import emulation_status, ensure_emulation

pytestmark = pytest.mark.integration

CONTAINERFILE = (
    "FROM scratch\n"
    "ARG TARGETARCH\n"
    "COPY busybox-${TARGETARCH} /bin/busybox\n"
    'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
)


@pytest.fixture
def registry_state(tmp_path: Path) -> Iterator[Path]:
    """A state dir whose registry is always stopped, even when the test fails."""
    state_dir = tmp_path / "registry"
    yield state_dir
    stop_registry(state_dir=state_dir)


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_registry_starts_once_answers_and_stops(registry_state):
    port = free_port()
    registry = start_registry(state_dir=registry_state, port=port)
    assert registry == LocalRegistry(host="127.0.0.1", port=port, state_dir=registry_state)
    assert registry.address == f"127.0.0.1:{port}"

    response = httpx.get(f"http://{registry.address}/v2/", timeout=5, trust_env=False)
    assert response.status_code == 200
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    first_pid = registry.pid_file.read_text()

    again = start_registry(state_dir=registry_state, port=port)
    assert again == registry
    assert registry.pid_file.read_text() == first_pid, "a second registry process was started"

    assert stop_registry(state_dir=registry_state) is True
    assert not registry.pid_file.exists()
    assert not _port_open(port), f"port {port} still accepts connections after stop"
    assert stop_registry(state_dir=registry_state) is False


def test_busybox_context_holds_one_verified_binary_per_arch(tmp_path):
    dest = tmp_path / "context"
    cache_dir = tmp_path / "cache"

    assert prepare_busybox_context(dest=dest, cache_dir=cache_dir) == dest

    assert (dest / "Containerfile").read_text() == CONTAINERFILE
    for arch in ("amd64", "arm64"):
        binary = dest / f"busybox-{arch}"
        assert binary.stat().st_mode & 0o777 == 0o755
        assert elf_machine(binary.read_bytes()[:20]) == ELF_MACHINES[arch]
    debs = sorted(path.name for path in cache_dir.glob("*.deb"))
    assert len(debs) == 2, debs

    started = time.monotonic()
    prepare_busybox_context(dest=dest, cache_dir=cache_dir)
    assert time.monotonic() - started < 5, "the second call should only reuse the cache"
    assert sorted(path.name for path in cache_dir.glob("*.deb")) == debs


def test_ensure_emulation_makes_arm64_available():
    ensure_emulation("arm64")
    status = emulation_status("arm64")
    assert status.available, status.reason
