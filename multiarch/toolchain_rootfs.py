"""The Debian 13 (trixie) toolchain root filesystem: buildah 1.39, skopeo 1.18, runc, netavark.

Debian 13's container tools need glibc 2.38 and do not install on a Debian 12 host, but
`mmdebstrap trixie` makes a root filesystem holding them (as devtools/debian_base.py does for
bookworm), and multiarch/toolchain.py runs a step's argv inside it with its own mount
namespace. This module builds that rootfs for the host's architecture and caches it outside
the git clone, so every fresh CI clone on the same machine reuses it:

    ${XDG_CACHE_HOME:-$HOME/.cache}/multiarch-builder/toolchain/<key>/
        rootfs/          the trixie root filesystem (never written once built)
        mnt/             empty: each step mounts its private tmpfs here, in its own namespace
        toolchain.json   the recipe, package versions, build time and size

The key hashes the recipe: suite, variant, package list, apt sources, architecture, the
files written into the rootfs and RECIPE_VERSION. A build goes into a temporary directory
beside it under a lock and is renamed into place when complete, so an interrupted build
never leaves a half rootfs that looks cached (the next build removes the leftover).
mmdebstrap runs as a plan step (multiarch.process.run_step): in its own PID and mount
namespaces, so its mounts and processes die with it, even when we are SIGKILLed.

Delete `<key>/` to take in newer trixie packages; old keys are never deleted automatically
(a step of another checkout may be using one).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from multiarch.emulation import host_architecture
from multiarch.errors import ConfigurationError, StepFailure
from multiarch.process import Step, capture, run_step
from multiarch.toolchain import Toolchain, enter_argv

SUITE = "trixie"
VARIANT = "apt"
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
# What the steps run, and what buildah needs for `--isolation oci` (runc) and a bridged RUN
# network (netavark, which drives nftables; aardvark-dns for networks with DNS). vfs and
# overlay storage need nothing more as root. git for fetch steps, mount for debugging.
PACKAGES = (
    "aardvark-dns",
    "buildah",
    "ca-certificates",
    "git",
    "mount",
    "netavark",
    "nftables",
    "runc",
    "skopeo",
)
# No manual pages, documentation or translations: about 10% of the rootfs.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
)
# The rootfs's own containers.conf drop-in. The subnet: the host's buildah 1.28 keeps its
# CNI bridge cni-podman0 on podman's default 10.88.0.0/16, and a second bridge (netavark's
# podman0) on the same subnet gets the host's replies routed to the first one: a RUN step
# then has no DNS and no network at all. runc: the only runtime installed.
CONTAINERS_CONF = """\
# Written by multiarch/toolchain_rootfs.py
[network]
network_backend = "netavark"
firewall_driver = "nftables"
default_subnet = "10.89.0.0/16"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
CONTAINERS_CONF_PATH = "etc/containers/containers.conf.d/10-multiarch-toolchain.conf"
# Bumped whenever this module changes what it puts into a rootfs.
RECIPE_VERSION = 1
VERSION_PACKAGES = ("buildah", "skopeo", "runc", "netavark", "aardvark-dns", "nftables", "git")
# The tools whose versions `python -m devtools toolchain` prints (netavark is a helper of
# buildah's, outside PATH).
TOOLS = {"buildah": "buildah", "skopeo": "skopeo", "runc": "runc",
         "netavark": "/usr/lib/podman/netavark", "aardvark-dns": "/usr/lib/podman/aardvark-dns"}
BUILD_TIMEOUT_S = 1800.0
_TAIL_LINES = 12
_DEBIAN_ARCHES = {"amd64": "amd64", "arm64": "arm64", "arm": "armhf", "ppc64le": "ppc64el",
                  "s390x": "s390x", "riscv64": "riscv64", "386": "i386"}


@dataclass(frozen=True)
class Recipe:
    """Everything that goes into a toolchain rootfs; its key names the cache directory."""

    arch: str
    suite: str = SUITE
    variant: str = VARIANT
    packages: tuple[str, ...] = PACKAGES
    mirror: str = MIRROR
    security_mirror: str = SECURITY_MIRROR

    def sources(self) -> list[str]:
        return [
            f"deb {self.mirror} {self.suite} main",
            f"deb {self.mirror} {self.suite}-updates main",
            f"deb {self.security_mirror} {self.suite}-security main",
        ]

    def key(self) -> str:
        material = {
            "arch": self.arch,
            "suite": self.suite,
            "variant": self.variant,
            "packages": sorted(self.packages),
            "sources": self.sources(),
            "dpkg": list(DPKG_OPTIONS),
            "containers.conf": CONTAINERS_CONF,
            "recipe": RECIPE_VERSION,
        }
        blob = json.dumps(material, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class ToolchainRootfs:
    """A built, cached toolchain: where it is and what its toolchain.json says."""

    path: Path  # <cache>/<key>
    key: str
    manifest: dict[str, object]

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def scratch(self) -> Path:
        return self.path / "mnt"

    def toolchain(self) -> Toolchain:
        return Toolchain(rootfs=str(self.rootfs), scratch=str(self.scratch))


def cache_root(env: dict[str, str] | None = None) -> Path:
    """`${XDG_CACHE_HOME:-$HOME/.cache}/multiarch-builder/toolchain`, outside any clone."""
    env = dict(os.environ) if env is None else env
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or "/root") / ".cache")
    return Path(base) / "multiarch-builder" / "toolchain"


def ensure_rootfs(*, cache_dir: Path | None = None, recipe: Recipe | None = None,
                  timeout_s: float = BUILD_TIMEOUT_S,
                  emit: Callable[[str], None] | None = None) -> ToolchainRootfs:
    """The cached toolchain rootfs of `recipe` (default: the host's architecture), built on
    a miss with one line to `emit` (default stderr). Concurrent callers build it once (a
    lock per key)."""
    recipe = recipe or Recipe(arch=host_architecture())
    root = (cache_dir or cache_root()).resolve()
    key = recipe.key()
    final = root / key
    cached = _load(final, key)
    if cached is not None:
        return cached
    root.mkdir(parents=True, exist_ok=True)
    with (root / f".{key}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = _load(final, key)
        if cached is not None:
            return cached
        return _build(recipe, root=root, final=final, key=key, timeout_s=timeout_s,
                      emit=emit or _stderr)


def _load(final: Path, key: str) -> ToolchainRootfs | None:
    manifest_file = final / "toolchain.json"
    if not manifest_file.is_file():
        return None
    return ToolchainRootfs(path=final, key=key, manifest=json.loads(manifest_file.read_text()))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _build(recipe: Recipe, *, root: Path, final: Path, key: str, timeout_s: float,
           emit: Callable[[str], None]) -> ToolchainRootfs:
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise ConfigurationError(
            "`mmdebstrap` is not installed (the toolchain rootfs needs it): "
            "apt-get install mmdebstrap")
    debian_arch = _DEBIAN_ARCHES.get(recipe.arch)
    if debian_arch is None:
        raise ConfigurationError(f"no Debian architecture is known for {recipe.arch!r}")
    for stale in root.glob(f".{key}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)  # an interrupted build's leftovers
    partial = root / f".{key}.partial-{os.getpid()}"
    partial.mkdir()
    rootfs = partial / "rootfs"
    argv = [
        mmdebstrap, "--mode=root", f"--variant={recipe.variant}", f"--arch={debian_arch}",
        f"--include={','.join(recipe.packages)}",
        *(f"--dpkgopt={option}" for option in DPKG_OPTIONS),
        "--quiet", recipe.suite, str(rootfs), *recipe.sources(),
    ]
    emit(f"toolchain: building the Debian {recipe.suite} rootfs for {recipe.arch} "
         f"({', '.join(recipe.packages)}) with mmdebstrap into {final} "
         "(about a minute, once per recipe)")
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    started = time.monotonic()
    try:
        run_step(Step(name="mmdebstrap", argv=tuple(argv)), emit=tail.append,
                 deadline=started + timeout_s, label="toolchain rootfs")
    except StepFailure as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise ConfigurationError(
            f"mmdebstrap could not build the {recipe.suite} toolchain rootfs for "
            f"{recipe.arch} ({error}): {' | '.join(tail) or 'no output'}; check that "
            f"{recipe.mirror} is reachable") from error
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    build_s = time.monotonic() - started
    conf = rootfs / CONTAINERS_CONF_PATH
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(CONTAINERS_CONF)
    (partial / "mnt").mkdir()
    manifest: dict[str, object] = {
        "key": key,
        "suite": recipe.suite,
        "variant": recipe.variant,
        "arch": recipe.arch,
        "packages": list(recipe.packages),
        "sources": recipe.sources(),
        "recipe": RECIPE_VERSION,
        "versions": package_versions(rootfs),
        "build_seconds": round(build_s, 1),
        "size_bytes": disk_usage(rootfs),
        "built_at": int(time.time()),
    }
    (partial / "toolchain.json").write_text(json.dumps(manifest, indent=2) + "\n")
    try:
        os.rename(partial, final)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if _load(final, key) is None:
            raise
    loaded = _load(final, key)
    assert loaded is not None
    return loaded


def upstream_version(package_version: str) -> tuple[int, int, int] | None:
    """`1.39.3+ds1-1` (a Debian version) -> (1, 39, 3); None when it does not start so."""
    match = re.match(r"(?:\d+:)?(\d+)\.(\d+)(?:\.(\d+))?", package_version)
    if match is None:
        return None
    return int(match[1]), int(match[2]), int(match[3] or 0)


def package_versions(rootfs: Path, packages: Sequence[str] = VERSION_PACKAGES) -> dict[str, str]:
    """The installed versions of `packages`, read from the rootfs's dpkg database."""
    done = subprocess.run(
        ["dpkg-query", f"--admindir={rootfs}/var/lib/dpkg", "-W",
         "-f", "${Package} ${Version}\\n", *packages],
        capture_output=True, text=True, check=False)
    versions = {}
    for line in done.stdout.splitlines():
        name, _, version = line.partition(" ")
        if version:
            versions[name] = version
    return versions


def disk_usage(path: Path) -> int:
    """Bytes allocated under `path` (like `du -s`), hard links counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, _dirs, files in os.walk(path):
        for name in [*files, *_dirs]:
            st = os.lstat(os.path.join(directory, name))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total + os.lstat(path).st_blocks * 512


def tool_versions(toolchain: Toolchain) -> dict[str, str]:
    """The first line of `--version` of each tool, run inside the toolchain."""
    versions = {}
    for tool, path in TOOLS.items():
        argv = enter_argv([path, "--version"], toolchain=toolchain, binfmt=False)
        done = capture(argv, what=f"{tool} --version in the toolchain", timeout_s=60)
        lines = (done.stdout or done.stderr).strip().splitlines()
        versions[tool] = lines[0] if done.ok and lines else f"failed: {done.last_error()}"
    return versions


def main() -> int:
    """`python -m devtools toolchain`: build (or find) the rootfs, print it and its tools."""
    built = ensure_rootfs()
    size = int(str(built.manifest.get("size_bytes", 0)))
    print(f"toolchain rootfs: {built.rootfs}")
    print(f"key {built.key}, {built.manifest.get('suite')} {built.manifest.get('arch')}, "
          f"{size / 2**20:.0f} MiB, built in {built.manifest.get('build_seconds')} s")
    for tool, version in tool_versions(built.toolchain()).items():
        print(f"  {tool}: {version}")
    return 0
