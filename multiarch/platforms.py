"""Target platforms (`os/arch[/variant]`), parsed once and normalised.

Users write `linux/aarch64`, `linux/arm64/v8` or `linux/arm64` for the same thing; the
index must say exactly one of them (OCI: architecture `arm64`, variant `v8`). Parsing
normalises the aliases the way containerd does, so two spellings never become two
index entries, and rejects what no builder can produce with a message that names the fix.
"""

from __future__ import annotations

import re
from typing import Any

from multiarch.textvalue import TextValue

SUPPORTED_OS = frozenset({"linux"})

# Go/OCI architecture names and the variants each accepts.
ARCH_VARIANTS: dict[str, frozenset[str]] = {
    "amd64": frozenset({"v1", "v2", "v3", "v4"}),
    "arm64": frozenset({"v8", "v9"}),
    "arm": frozenset({"v5", "v6", "v7"}),
    "386": frozenset(),
    "ppc64le": frozenset(),
    "s390x": frozenset(),
    "riscv64": frozenset(),
    "mips64le": frozenset(),
}

# Kernel and distribution spellings people type, mapped to (architecture, variant).
ARCH_ALIASES: dict[str, tuple[str, str | None]] = {
    "x86_64": ("amd64", None),
    "x86-64": ("amd64", None),
    "aarch64": ("arm64", None),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v6"),
    "i386": ("386", None),
    "i686": ("386", None),
}

# The variant an index entry carries when the user named none (OCI image-index spec:
# "variant ... e.g. v7 to specify ARMv7 when architecture is arm"; arm64 is v8).
DEFAULT_VARIANT: dict[str, str] = {"arm64": "v8", "arm": "v7"}

_PART = re.compile(r"^[a-z0-9_-]+$")


class Platform(TextValue):
    """One target platform; written and read as the string `os/arch[/variant]`."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def fields_from_text(cls, text: str) -> dict[str, Any]:
        return _parse_fields(text)

    def check(self) -> None:
        _check_fields(self.os, self.architecture, self.variant)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse `os/arch[/variant]`, raising ValueError with the fix in the message."""
        return cls.model_validate(text)

    def __str__(self) -> str:
        parts = [self.os, self.architecture]
        if self.variant:
            parts.append(self.variant)
        return "/".join(parts)

    @property
    def slug(self) -> str:
        """A name safe for paths, tags and Kubernetes labels: `linux-arm-v7`."""
        return str(self).replace("/", "-")

    @property
    def index_variant(self) -> str | None:
        """The variant written into the image index entry (arm64 always gets v8)."""
        return self.variant or DEFAULT_VARIANT.get(self.architecture)

    @property
    def build_text(self) -> str:
        """What buildah's `--platform` is given: with the index variant (`linux/arm64/v8`),
        so the image config says the variant the index entry will say (buildah writes no
        variant for a bare `linux/arm64`, and `crane validate` rejects an entry whose
        variant its config lacks)."""
        variant = self.index_variant
        return "/".join([self.os, self.architecture, *([variant] if variant else [])])


def _parse_fields(text: str) -> dict[str, str | None]:
    parts = text.strip().lower().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(
            f"platform {text!r} is not of the form os/arch[/variant]: "
            "write e.g. linux/amd64, linux/arm64 or linux/arm/v7"
        )
    os_name, arch = parts[0], parts[1]
    variant: str | None = parts[2] if len(parts) == 3 else None
    if arch in ARCH_ALIASES:
        arch, alias_variant = ARCH_ALIASES[arch]
        variant = variant or alias_variant
    if arch == "arm64" and variant == "v8":
        variant = None  # containerd's normal form: linux/arm64 means arm64/v8
    if arch == "arm" and variant is None:
        variant = DEFAULT_VARIANT["arm"]
    return {"os": os_name, "architecture": arch, "variant": variant}


def _check_fields(os_name: str, arch: str, variant: str | None) -> None:
    for part in (os_name, arch, variant or "x"):
        if not _PART.match(part):
            raise ValueError(f"platform part {part!r} has characters outside [a-z0-9_-]")
    if os_name not in SUPPORTED_OS:
        raise ValueError(
            f"platform os {os_name!r} is not supported: buildah builds linux images only "
            "(write linux/ARCH)"
        )
    if arch not in ARCH_VARIANTS:
        known = ", ".join(sorted(ARCH_VARIANTS))
        raise ValueError(f"platform architecture {arch!r} is unknown: use one of {known}")
    allowed = ARCH_VARIANTS[arch]
    if variant is not None and variant not in allowed:
        hint = f"one of {', '.join(sorted(allowed))}" if allowed else "no variant"
        raise ValueError(f"platform variant {variant!r} is not valid for {arch}: use {hint}")
