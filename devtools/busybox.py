"""An offline multi-arch base image build context made from Debian's `busybox-static`.

The newcomer demo and the integration tests need a tiny base image for several
architectures without pulling from Docker Hub (rate limits, no network in CI sandboxes).
Debian's mirrors are reachable and apt verifies every .deb against the signed archive, so
we take the statically linked busybox from there and build `FROM scratch` on top of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from multiarch.emulation import host_architecture
from multiarch.errors import ConfigurationError

PACKAGE = "busybox-static"

CONTAINERFILE = """\
FROM scratch
ARG TARGETARCH
COPY busybox-${TARGETARCH} /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
"""

# OCI architecture -> Debian architecture (they differ for 32-bit arm, 386 and ppc64le).
DEBIAN_ARCHES: dict[str, str] = {
    "amd64": "amd64",
    "arm64": "arm64",
    "arm": "armhf",
    "386": "i386",
    "ppc64le": "ppc64el",
    "s390x": "s390x",
    "riscv64": "riscv64",
}

# OCI architecture -> ELF e_machine value a binary for it must carry.
ELF_MACHINES: dict[str, int] = {
    "amd64": 62,
    "arm64": 183,
    "arm": 40,
    "386": 3,
    "ppc64le": 21,
    "s390x": 22,
    "riscv64": 243,
}

_APT_NOISE = "Download is performed unsandboxed as root"
_TAIL_LINES = 12


def prepare_busybox_context(
    *,
    dest: Path,
    cache_dir: Path,
    arches: Sequence[str] = ("amd64", "arm64"),
) -> Path:
    """Fill `dest` with one busybox per arch plus a Containerfile; return `dest`.

    Downloads are cached in `cache_dir`, so a second call needs no network and only
    re-extracts the cached packages.
    """
    _check_arches(arches)
    dest.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for arch in arches:
        deb = cached_deb(cache_dir=cache_dir, arch=arch) or download_deb(
            cache_dir=cache_dir, arch=arch
        )
        _install_binary(deb, arch=arch, target=dest / f"busybox-{arch}")
    _write_if_changed(dest / "Containerfile", CONTAINERFILE.encode(), mode=0o644)
    return dest


def cached_deb(*, cache_dir: Path, arch: str) -> Path | None:
    """Return the newest cached busybox-static .deb for `arch`, if any."""
    debs = sorted(
        cache_dir.glob(f"{PACKAGE}_*_{DEBIAN_ARCHES[arch]}.deb"),
        key=lambda path: path.stat().st_mtime,
    )
    return debs[-1] if debs else None


def download_deb(*, cache_dir: Path, arch: str) -> Path:
    """Download busybox-static for `arch` into `cache_dir` with apt and return its path.

    The download lands in a scratch directory first and is moved in afterwards, so a
    half-finished download is never mistaken for a cached package.
    """
    debarch = DEBIAN_ARCHES[arch]
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=f".download-{debarch}-") as tmp:
        scratch = Path(tmp)
        result = None
        if arch == host_architecture():
            # The system lists usually know the host package already: no update needed.
            result = _run_apt(["apt-get", "-q", "download", PACKAGE], cwd=scratch)
        if result is None or result.returncode != 0:
            # Foreign arch, or a fresh host without `apt-get update`: use private lists.
            options = _private_apt_options(cache_dir=cache_dir, debarch=debarch)
            _checked_apt(["apt-get", *options, "update"], cwd=scratch, arch=arch)
            result = _checked_apt(
                ["apt-get", *options, "download", PACKAGE], cwd=scratch, arch=arch
            )
        downloaded = sorted(scratch.glob(f"{PACKAGE}_*_{debarch}.deb"))
        if not downloaded:
            raise ConfigurationError(
                f"apt-get reported success but left no {PACKAGE} .deb for {debarch} in "
                f"{scratch}: {_tail(result.stdout + result.stderr)}"
            )
        final = cache_dir / downloaded[-1].name
        os.replace(downloaded[-1], final)
    return final


def check_elf_machine(path: Path, *, arch: str) -> None:
    """Fail unless `path` is an ELF binary for `arch`.

    A binary for the wrong machine would build a base image whose platform label lies,
    which only shows up later as "exec format error" on someone else's hardware.
    """
    with path.open("rb") as handle:
        header = handle.read(20)
    machine = elf_machine(header)
    if machine is None:
        raise ConfigurationError(
            f"{path} is not an ELF binary; delete the cached {PACKAGE} .deb and retry"
        )
    expected = ELF_MACHINES[arch]
    if machine != expected:
        raise ConfigurationError(
            f"{path} is built for ELF machine {machine}, but {arch} needs {expected}; the "
            f"{PACKAGE} package came from the wrong architecture: delete the cached .deb "
            "and its lists-* directory and retry"
        )


def elf_machine(header: bytes) -> int | None:
    """Return e_machine from an ELF header, honouring its byte order; None if not ELF."""
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    if header[5] == 1:
        return int.from_bytes(header[18:20], "little")
    if header[5] == 2:
        return int.from_bytes(header[18:20], "big")
    return None


def _check_arches(arches: Sequence[str]) -> None:
    """Reject unknown or empty arch lists before any download starts."""
    if isinstance(arches, str) or not arches:
        raise ConfigurationError(
            f"arches must be a non-empty list of OCI architectures, got {arches!r}; "
            'pass e.g. ("amd64", "arm64")'
        )
    unknown = [arch for arch in arches if arch not in DEBIAN_ARCHES]
    if unknown:
        raise ConfigurationError(
            f"cannot fetch {PACKAGE} for {', '.join(unknown)}: unknown architecture; use "
            f"one of {', '.join(sorted(DEBIAN_ARCHES))}"
        )


def _private_apt_options(*, cache_dir: Path, debarch: str) -> list[str]:
    """apt options that read/write package lists under `cache_dir` only.

    A private Dir::State::Lists (and no binary cache files) keeps the system's apt state
    untouched, so fetching an arm64 package does not make the host think it is arm64.
    """
    lists = cache_dir / f"lists-{debarch}"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    return [
        "-q",
        f"-oAPT::Architecture={debarch}",
        f"-oAPT::Architectures={debarch}",
        f"-oDir::State::Lists={lists}",
        "-oDir::Cache::pkgcache=",
        "-oDir::Cache::srcpkgcache=",
    ]


def _run_apt(argv: list[str], *, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run apt, translating "apt is not installed" into an actionable error."""
    try:
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ConfigurationError(
            f"cannot fetch {PACKAGE}: `{argv[0]}` is not installed; the local demo base "
            "image needs a Debian or Ubuntu host (apt-get and dpkg-deb)"
        ) from None


def _checked_apt(argv: list[str], *, cwd: Path, arch: str) -> subprocess.CompletedProcess[str]:
    """Run apt and raise with its last stderr lines when it fails."""
    result = _run_apt(argv, cwd=cwd)
    if result.returncode != 0:
        raise ConfigurationError(
            f"could not fetch {PACKAGE} for {arch}: `{' '.join(argv)}` exited "
            f"{result.returncode}: {_tail(result.stderr or result.stdout)}; check that the "
            "Debian mirrors in /etc/apt/sources.list are reachable"
        )
    return result


def _tail(output: str) -> str:
    """Last meaningful output lines, without apt's harmless sandbox warning."""
    lines = [line for line in output.splitlines() if line.strip() and _APT_NOISE not in line]
    return " | ".join(lines[-_TAIL_LINES:]) or "(no output)"


def _install_binary(deb: Path, *, arch: str, target: Path) -> None:
    """Extract busybox from `deb`, verify its machine, and place it at `target` (0755)."""
    with tempfile.TemporaryDirectory(prefix="busybox-extract-") as tmp:
        root = Path(tmp)
        argv = [_which_or_fail("dpkg-deb", "dpkg"), "-x", str(deb), str(root)]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ConfigurationError(
                f"could not unpack {deb}: {_tail(result.stderr)}; delete it so the next "
                "run downloads it again"
            )
        binary = next(
            (p for p in (root / "bin/busybox", root / "usr/bin/busybox") if p.is_file()), None
        )
        if binary is None:
            raise ConfigurationError(
                f"{deb} contains no bin/busybox; the {PACKAGE} package layout changed and "
                "devtools/busybox.py needs updating"
            )
        check_elf_machine(binary, arch=arch)
        _write_if_changed(target, binary.read_bytes(), mode=0o755)


def _write_if_changed(target: Path, content: bytes, *, mode: int) -> None:
    """Atomically replace `target` only when its bytes differ, so reruns change nothing."""
    if target.is_file() and target.read_bytes() == content:
        target.chmod(mode)
        return
    partial = target.with_name(f".{target.name}.partial")
    partial.write_bytes(content)
    partial.chmod(mode)
    os.replace(partial, target)


def _which_or_fail(tool: str, package: str) -> str:
    """Resolve a required tool, naming the Debian package that provides it."""
    path = shutil.which(tool)
    if path is None:
        raise ConfigurationError(f"`{tool}` is not installed: apt-get install {package}")
    return path
