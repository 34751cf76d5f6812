"""Unit tests for binfmt_misc status reporting and the busybox ELF machine check.

Registering into a real binfmt_misc cannot be faked (its `register` file is a kernel
interface), so these tests cover the read-only status logic and the paths that must not
touch the kernel; tests/integration/test_localenv.py covers real registration.
"""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from devtools.busybox import ELF_MACHINES, check_elf_machine, elf_machine
from multiarch import emulation
from multiarch.emulation import (
    QEMU_NAMES,
    EmulationStatus,
    emulation_status,
    ensure_emulation,
    host_architecture,
)
from multiarch.errors import ConfigurationError


@pytest.fixture
def amd64_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pin the host to amd64 so arm64 is always the foreign architecture under test."""
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")


@pytest.fixture
def binfmt_dir(tmp_path: Path) -> Path:
    """A stand-in for a mounted /proc/sys/fs/binfmt_misc (register + status files)."""
    directory = tmp_path / "binfmt_misc"
    directory.mkdir()
    (directory / "register").write_text("")
    (directory / "status").write_text("enabled\n")
    return directory


def _entry(binfmt_dir: Path, name: str, state: str) -> None:
    (binfmt_dir / f"qemu-{name}").write_text(
        f"{state}\ninterpreter /usr/libexec/qemu-binfmt/{name}-binfmt-P\nflags: POF\n"
    )


@pytest.mark.parametrize(
    ("machine", "arch"),
    [
        ("x86_64", "amd64"),
        ("aarch64", "arm64"),
        ("armv7l", "arm"),
        ("armv6l", "arm"),
        ("i686", "386"),
        ("i386", "386"),
        ("ppc64le", "ppc64le"),
        ("s390x", "s390x"),
        ("riscv64", "riscv64"),
    ],
)
def test_host_architecture_maps_machine_names(monkeypatch, machine, arch):
    monkeypatch.setattr(platform, "machine", lambda: machine)
    assert host_architecture() == arch


def test_host_architecture_rejects_unknown_machine(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "vax")
    with pytest.raises(ConfigurationError, match="vax"):
        host_architecture()


def test_qemu_names_cover_the_documented_architectures():
    assert QEMU_NAMES == {
        "arm64": "aarch64",
        "arm": "arm",
        "amd64": "x86_64",
        "386": "i386",
        "ppc64le": "ppc64le",
        "s390x": "s390x",
        "riscv64": "riscv64",
    }


@pytest.mark.usefixtures("amd64_host")
def test_status_when_binfmt_misc_is_not_mounted(tmp_path):
    status = emulation_status("arm64", binfmt_dir=tmp_path / "missing")
    assert not status.available
    assert "not mounted" in status.reason
    assert "make up" in status.reason


@pytest.mark.usefixtures("amd64_host")
def test_status_when_the_entry_is_missing(binfmt_dir):
    status = emulation_status("arm64", binfmt_dir=binfmt_dir)
    assert not status.available
    assert "no qemu-aarch64 entry" in status.reason
    assert "qemu-user-static" in status.reason


@pytest.mark.usefixtures("amd64_host")
def test_status_when_the_entry_is_disabled(binfmt_dir):
    _entry(binfmt_dir, "aarch64", "disabled")
    status = emulation_status("arm64", binfmt_dir=binfmt_dir)
    assert not status.available
    assert "qemu-aarch64 entry" in status.reason
    assert "disabled" in status.reason


@pytest.mark.usefixtures("amd64_host")
def test_status_when_the_entry_is_enabled(binfmt_dir):
    _entry(binfmt_dir, "aarch64", "enabled")
    assert emulation_status("arm64", binfmt_dir=binfmt_dir) == EmulationStatus(
        arch="arm64", available=True, reason="qemu-aarch64 is registered and enabled"
    )


@pytest.mark.usefixtures("amd64_host")
def test_status_when_binfmt_misc_is_globally_disabled(binfmt_dir):
    _entry(binfmt_dir, "aarch64", "enabled")
    (binfmt_dir / "status").write_text("disabled\n")
    status = emulation_status("arm64", binfmt_dir=binfmt_dir)
    assert not status.available
    assert "globally disabled" in status.reason


@pytest.mark.usefixtures("amd64_host")
def test_status_for_the_host_architecture_needs_no_emulation(tmp_path):
    status = emulation_status("amd64", binfmt_dir=tmp_path / "missing")
    assert status.available


@pytest.mark.usefixtures("amd64_host")
def test_status_for_an_unknown_architecture(binfmt_dir):
    status = emulation_status("mips64le", binfmt_dir=binfmt_dir)
    assert not status.available
    assert "mips64le" in status.reason


@pytest.mark.usefixtures("amd64_host")
def test_ensure_emulation_is_a_noop_for_the_host_architecture(tmp_path):
    binfmt_dir = tmp_path / "binfmt_misc"
    ensure_emulation("amd64", binfmt_dir=binfmt_dir, conf_dir=tmp_path / "conf")
    assert not binfmt_dir.exists()


@pytest.mark.usefixtures("amd64_host")
def test_ensure_emulation_rejects_an_unknown_architecture(binfmt_dir, tmp_path):
    with pytest.raises(ConfigurationError, match="mips64le"):
        ensure_emulation("mips64le", binfmt_dir=binfmt_dir, conf_dir=tmp_path)


@pytest.mark.usefixtures("amd64_host")
def test_ensure_emulation_names_the_package_when_the_conf_file_is_missing(binfmt_dir, tmp_path):
    with pytest.raises(ConfigurationError, match="qemu-user-static"):
        ensure_emulation("arm64", binfmt_dir=binfmt_dir, conf_dir=tmp_path / "no-conf")


@pytest.mark.usefixtures("amd64_host")
def test_ensure_emulation_explains_that_root_is_needed(monkeypatch, tmp_path):
    monkeypatch.setattr(emulation.os, "geteuid", lambda: 1000)
    with pytest.raises(ConfigurationError, match="needs root"):
        ensure_emulation("arm64", binfmt_dir=tmp_path / "unmounted", conf_dir=tmp_path)


def _elf_header(machine: int, *, big_endian: bool = False, elf_class: int = 2) -> bytes:
    order = "big" if big_endian else "little"
    ident = b"\x7fELF" + bytes([elf_class, 2 if big_endian else 1, 1]) + bytes(9)
    return ident + (2).to_bytes(2, order) + machine.to_bytes(2, order) + bytes(44)


@pytest.mark.parametrize(
    ("header", "machine"),
    [
        (_elf_header(62), 62),
        (_elf_header(183), 183),
        (_elf_header(40, elf_class=1), 40),
        (_elf_header(22, big_endian=True), 22),
        (b"#!/bin/sh\n" + bytes(20), None),
        (b"\x7fELF", None),
    ],
)
def test_elf_machine_reads_e_machine_in_the_header_byte_order(header, machine):
    assert elf_machine(header) == machine


def test_check_elf_machine_accepts_the_matching_architecture(tmp_path):
    binary = tmp_path / "busybox-arm64"
    binary.write_bytes(_elf_header(ELF_MACHINES["arm64"]))
    check_elf_machine(binary, arch="arm64")


def test_check_elf_machine_rejects_a_binary_for_another_machine(tmp_path):
    binary = tmp_path / "busybox-arm64"
    binary.write_bytes(_elf_header(ELF_MACHINES["amd64"]))
    with pytest.raises(ConfigurationError, match="ELF machine 62, but arm64 needs 183"):
        check_elf_machine(binary, arch="arm64")


def test_check_elf_machine_rejects_a_non_elf_file(tmp_path):
    binary = tmp_path / "busybox-amd64"
    binary.write_text("<html>404</html>")
    with pytest.raises(ConfigurationError, match="not an ELF binary"):
        check_elf_machine(binary, arch="amd64")
