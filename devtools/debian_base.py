"""An offline Debian 12 base image for amd64 and arm64, made with mmdebstrap.

The builder image and examples/debian-app need a real Debian (apt, glibc, python3), and no
public registry is reachable from many build machines. deb.debian.org is, and apt checks
every package against the signed archive, so each architecture's root filesystem is
bootstrapped from Debian's packages (the arm64 one runs its maintainer scripts under QEMU)
and pushed as `<registry>/library/debian:bookworm` through the project's own flow.

A bootstrap takes half a minute natively and minutes under QEMU, so each tar is cached under
`<state>/debian-base/`, keyed on everything that changes its content.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devtools.busybox import DEBIAN_ARCHES
from devtools.playground import publish_local_base
from multiarch.emulation import ensure_emulation, host_architecture
from multiarch.errors import ConfigurationError

REPOSITORY = "library/debian"
SUITE = "bookworm"
VARIANT = "minbase"
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
ARCHES = ("amd64", "arm64")
# Every file in the tar carries this time, so two bootstraps of the same packages give
# the same bytes (mmdebstrap honours SOURCE_DATE_EPOCH) and the image digest only moves
# when a package does. 2023-06-10, the release of Debian 12.
SOURCE_DATE_EPOCH = 1686355200
# Bumped whenever this module changes what it puts into a tar.
FORMAT = 1

CONTAINERFILE = """\
# Debian {suite} ({variant}) bootstrapped by mmdebstrap from {mirror}; devtools/debian_base.py
FROM scratch
ARG TARGETARCH
ADD rootfs-${{TARGETARCH}}.tar /
ENV LANG=C.UTF-8
CMD ["bash"]
"""

_TAIL_LINES = 12


@dataclass(frozen=True)
class BaseSpec:
    """What goes into one architecture's root filesystem; its key names the cached tar."""

    arch: str
    suite: str = SUITE
    variant: str = VARIANT
    mirror: str = MIRROR
    security_mirror: str = SECURITY_MIRROR

    def sources(self) -> list[str]:
        """The apt sources of the image: a RUN apt-get sees updates and security fixes."""
        return [
            f"deb {self.mirror} {self.suite} main",
            f"deb {self.mirror} {self.suite}-updates main",
            f"deb {self.security_mirror} {self.suite}-security main",
        ]

    def key(self, *, mmdebstrap_version: str) -> str:
        """A hash of every input that changes the tar's bytes."""
        material = {
            "arch": self.arch,
            "suite": self.suite,
            "variant": self.variant,
            "sources": self.sources(),
            "epoch": SOURCE_DATE_EPOCH,
            "mmdebstrap": mmdebstrap_version,
            "format": FORMAT,
        }
        blob = json.dumps(material, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def base_reference(address: str, *, suite: str = SUITE) -> str:
    return f"{address}/{REPOSITORY}:{suite}"


def mmdebstrap_version() -> str:
    """`mmdebstrap --version`'s output; failing with the package to install if missing."""
    tool = shutil.which("mmdebstrap")
    if tool is None:
        raise ConfigurationError(
            "`mmdebstrap` is not installed (the Debian base image needs it): "
            "apt-get install mmdebstrap arch-test"
        )
    done = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or done.stderr.strip()


def cache_key(arches: Sequence[str] = ARCHES) -> str:
    """One key for the whole multi-arch base: the per-arch keys, in order."""
    version = mmdebstrap_version()
    keys = [BaseSpec(arch=arch).key(mmdebstrap_version=version) for arch in arches]
    return hashlib.sha256(" ".join(keys).encode()).hexdigest()[:16]


def rootfs_tar(spec: BaseSpec, *, cache_dir: Path, log: logging.Logger) -> Path:
    """The cached root filesystem tar of `spec`, bootstrapping it on a cache miss.

    The tar is written next to its final name and renamed when complete, so an interrupted
    bootstrap never leaves a tar that looks cached.
    """
    version = mmdebstrap_version()
    if spec.arch not in DEBIAN_ARCHES:
        raise ConfigurationError(f"no Debian architecture is known for {spec.arch!r}")
    key = spec.key(mmdebstrap_version=version)
    final = cache_dir / f"{spec.suite}-{spec.variant}-{spec.arch}-{key}.tar"
    if final.is_file():
        return final
    if spec.arch != host_architecture():
        if shutil.which("arch-test") is None:
            raise ConfigurationError(
                f"`arch-test` is not installed (mmdebstrap needs it to bootstrap {spec.arch} "
                "through QEMU): apt-get install arch-test"
            )
        ensure_emulation(spec.arch)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(f".{final.name}.partial")
    partial.unlink(missing_ok=True)
    argv = [
        "mmdebstrap",
        "--mode=root",
        f"--variant={spec.variant}",
        f"--arch={DEBIAN_ARCHES[spec.arch]}",
        "--format=tar",
        "--skip=output/dev",
        "--quiet",
        spec.suite,
        str(partial),
        *spec.sources(),
    ]
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH)}
    log.info(f"debian base: bootstrapping {spec.suite} for {spec.arch} with mmdebstrap")
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise ConfigurationError(
            f"mmdebstrap could not bootstrap {spec.suite} for {spec.arch} (exit "
            f"{done.returncode}): {_tail(done.stderr or done.stdout)}; check that "
            f"{spec.mirror} is reachable"
        )
    os.replace(partial, final)
    log.info(
        f"debian base: {spec.arch} rootfs in {time.monotonic() - started:.0f} s "
        f"({final.stat().st_size // 2**20} MiB, {final})"
    )
    return final


def prepare_context(
    *, dest: Path, cache_dir: Path, arches: Sequence[str] = ARCHES, log: logging.Logger
) -> Path:
    """A build context with one rootfs tar per arch (hard links into the cache) and a
    Containerfile that ADDs the target's tar, like the busybox base."""
    dest.mkdir(parents=True, exist_ok=True)
    for arch in arches:
        tar = rootfs_tar(BaseSpec(arch=arch), cache_dir=cache_dir, log=log)
        link = dest / f"rootfs-{arch}.tar"
        if link.exists() and os.path.samefile(link, tar):
            continue
        link.unlink(missing_ok=True)
        try:
            os.link(tar, link)
        except OSError:
            shutil.copyfile(tar, link)
    containerfile = CONTAINERFILE.format(suite=SUITE, variant=VARIANT, mirror=MIRROR)
    target = dest / "Containerfile"
    if not target.is_file() or target.read_text() != containerfile:
        target.write_text(containerfile)
    return dest


def ensure_debian_base(
    address: str,
    *,
    state_dir: Path,
    arches: Sequence[str] = ARCHES,
    log: logging.Logger,
    cache_dir: Path | None = None,
    work_dir: Path | None = None,
) -> str:
    """Push `<address>/library/debian:bookworm` for `arches` unless it is already current.

    Built through the project's own flow with rebuild=if-changed: the tars are cached, so a
    warm call only compares the context with what the tag already holds and builds nothing.
    The context's files carry SOURCE_DATE_EPOCH, so a rebuild of the same tars gives the
    same digests. `cache_dir` (default `<state_dir>/debian-base`) holds the tars.
    """
    reference = base_reference(address)
    cache_dir = cache_dir or state_dir / "debian-base"
    context = prepare_context(
        dest=cache_dir / "context",
        cache_dir=cache_dir,
        arches=arches,
        log=log,
    )
    digest = publish_local_base(reference, context=context, arches=arches,
                                work_dir=work_dir or state_dir / "work", log=log,
                                rebuild="if-changed", source_date_epoch=SOURCE_DATE_EPOCH)
    log.info(f"debian base: {reference} -> {digest}")
    return reference


def _tail(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    return " | ".join(lines[-_TAIL_LINES:]) or "(no output)"
