"""QEMU user emulation through the kernel's binfmt_misc.

A foreign-architecture `RUN` step only works when the kernel knows to hand that
architecture's ELF binaries to a qemu-user interpreter. That knowledge lives in
binfmt_misc, which is per-kernel state that a fresh machine (or a container) often lacks,
so we check it before a build instead of letting buildah fail with an opaque
"exec format error" half-way through.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from multiarch.errors import ConfigurationError
from multiarch.process import capture

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_CONF_DIR = Path("/usr/lib/binfmt.d")

# platform.machine() spellings -> the OCI/Go architecture names used in image platforms.
_MACHINE_TO_ARCH: dict[str, str] = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i686": "386",
    "i386": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}

# OCI architecture -> the name qemu-user-static registers as `qemu-<name>`.
QEMU_NAMES: dict[str, str] = {
    "arm64": "aarch64",
    "arm": "arm",
    "amd64": "x86_64",
    "386": "i386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}

_FIX_HINT = "run `make up` as root (it installs qemu-user-static and registers it)"


@dataclass(frozen=True)
class EmulationStatus:
    """Whether `arch` binaries can run here; `reason` says why not and how to fix it."""

    arch: str
    available: bool
    reason: str


def host_architecture() -> str:
    """Return this machine's OCI architecture name, so native builds skip emulation."""
    machine = platform.machine()
    try:
        return _MACHINE_TO_ARCH[machine.lower()]
    except KeyError:
        raise ConfigurationError(
            f"unknown host machine type {machine!r}: multiarch cannot tell which OCI "
            f"architecture it runs natively; supported machine types are "
            f"{', '.join(sorted(_MACHINE_TO_ARCH))}"
        ) from None


def qemu_name(arch: str) -> str:
    """Return the qemu binfmt name for `arch`, failing clearly for unsupported ones."""
    try:
        return QEMU_NAMES[arch]
    except KeyError:
        raise ConfigurationError(
            f"no QEMU emulation is known for architecture {arch!r}: use one of "
            f"{', '.join(sorted(QEMU_NAMES))}"
        ) from None


def emulation_status(arch: str, *, binfmt_dir: Path = BINFMT_DIR) -> EmulationStatus:
    """Report whether the kernel will run `arch` binaries, without changing anything.

    Read-only so that planning and `doctor`-style checks can call it as any user.
    """
    if arch == host_architecture():
        return EmulationStatus(arch, True, "native architecture of this host")
    if arch not in QEMU_NAMES:
        return EmulationStatus(
            arch, False, f"no QEMU emulation is known for {arch!r} (known: {sorted(QEMU_NAMES)})"
        )
    name = QEMU_NAMES[arch]
    if not (binfmt_dir / "register").exists():
        return EmulationStatus(
            arch, False, f"binfmt_misc is not mounted at {binfmt_dir}: {_FIX_HINT}"
        )
    if _first_line(binfmt_dir / "status") == "disabled":
        return EmulationStatus(
            arch,
            False,
            f"binfmt_misc is globally disabled ({binfmt_dir}/status): "
            f"run `echo 1 > {binfmt_dir}/status` as root",
        )
    entry = binfmt_dir / f"qemu-{name}"
    if not entry.exists():
        return EmulationStatus(
            arch,
            False,
            f"no qemu-{name} entry registered in {binfmt_dir}: install Debian "
            f"`qemu-user-static` and {_FIX_HINT}",
        )
    if _first_line(entry) != "enabled":
        return EmulationStatus(
            arch, False, f"the qemu-{name} entry in {binfmt_dir} is disabled: {_FIX_HINT}"
        )
    return EmulationStatus(arch, True, f"qemu-{name} is registered and enabled")


def ensure_emulation(
    arch: str,
    *,
    binfmt_dir: Path = BINFMT_DIR,
    conf_dir: Path = BINFMT_CONF_DIR,
) -> None:
    """Make the kernel run `arch` binaries through qemu-user-static; safe to call repeatedly.

    Each step is skipped when already done, so calling this before every build costs a few
    stat() calls and never needs root on an already prepared machine.
    """
    if arch == host_architecture():
        return
    name = qemu_name(arch)
    _mount_binfmt_misc(binfmt_dir)
    entry = binfmt_dir / f"qemu-{name}"
    if not entry.exists():
        _register_entry(name, binfmt_dir=binfmt_dir, conf_dir=conf_dir)
    if _first_line(entry) != "enabled":
        _write_control(entry, "1", action=f"enable the qemu-{name} binfmt entry")
    status = emulation_status(arch, binfmt_dir=binfmt_dir)
    if not status.available:
        raise ConfigurationError(f"QEMU emulation for {arch} is still unavailable: {status.reason}")


def _first_line(path: Path) -> str | None:
    """Return the first line of a binfmt_misc control file, or None if unreadable."""
    try:
        with path.open(encoding="utf-8") as handle:
            return handle.readline().strip()
    except OSError:
        return None


def _require_root(action: str) -> None:
    """Fail before touching kernel state so the user sees the cause, not a bare EPERM."""
    if os.geteuid() != 0:
        raise ConfigurationError(
            f"cannot {action}: changing binfmt_misc needs root (running as uid "
            f"{os.geteuid()}); {_FIX_HINT}"
        )


def _mount_binfmt_misc(binfmt_dir: Path) -> None:
    """Mount binfmt_misc when its `register` file is missing (minimal hosts, containers)."""
    if (binfmt_dir / "register").exists():
        return
    _require_root(f"mount binfmt_misc at {binfmt_dir}")
    argv = ["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt_dir)]
    result = capture(argv, what=f"mounting binfmt_misc at {binfmt_dir}", timeout_s=60)
    if not result.ok or not (binfmt_dir / "register").exists():
        detail = result.last_error()
        raise ConfigurationError(
            f"could not mount binfmt_misc at {binfmt_dir}: {detail}; in a container this "
            "needs --privileged (or run `make up` on the host instead)"
        )


def _register_entry(name: str, *, binfmt_dir: Path, conf_dir: Path) -> None:
    """Register qemu-<name> from the rule Debian's qemu-user-static ships.

    Reusing the packaged rule keeps magic, mask and flags (POF) identical to what
    systemd-binfmt would register, rather than maintaining our own copy of those bytes.
    """
    conf = conf_dir / f"qemu-{name}.conf"
    if not conf.is_file():
        raise ConfigurationError(
            f"cannot register qemu-{name}: {conf} does not exist; install Debian "
            "`qemu-user-static` (apt-get install qemu-user-static) and retry"
        )
    rules = [
        line.strip()
        for line in conf.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith(("#", ";"))
    ]
    if not rules:
        raise ConfigurationError(
            f"cannot register qemu-{name}: {conf} holds no binfmt rule; reinstall Debian "
            "`qemu-user-static`"
        )
    for rule in rules:  # the kernel accepts exactly one rule per write
        _write_control(binfmt_dir / "register", rule, action=f"register qemu-{name} from {conf}")


def _write_control(path: Path, text: str, *, action: str) -> None:
    """Write one command to a binfmt_misc control file, translating kernel errors."""
    _require_root(action)
    try:
        with path.open("w", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        return  # registered concurrently by someone else: the goal is reached
    except OSError as exc:
        raise ConfigurationError(
            f"could not {action}: the kernel refused ({exc.strerror or exc}); check that "
            "the interpreter named in the rule exists (Debian `qemu-user-static`) and that "
            "this is not an unprivileged container"
        ) from exc
