"""`make builder`: the project builds its own multi-arch builder image with its own flow.

Every pod on a cluster runs deployments/builder/Containerfile, so it is built the way a user
builds any image: a context, `build_and_publish` for linux/amd64 + linux/arm64 (arm64
through QEMU here), FROM the Debian 12 base of devtools/debian_base.py. The context holds
the project as a wheel built from this checkout (the image never sees an editable source
tree) and the dependency versions the host venv was tested with.

`rebuild: if-changed` makes a warm run with nothing changed a registry lookup, and
`cache: registry` keeps the apt and dependency layers in `<image>/cache-<arch>`, so a code
change runs only the wheel's layer again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from devtools.debian_base import ARCHES, cache_key, ensure_debian_base
from multiarch.errors import ConfigurationError
from multiarch.orchestrate import build_and_publish
from multiarch.rebuild import tree_digest
from multiarch.request import BuildRequest, RunnerOptions

REPO_ROOT = Path(__file__).resolve().parents[1]
CONTAINERFILE_DIR = REPO_ROOT / "deployments" / "builder"
CONTEXT_FILES = ("Containerfile", "storage.conf", "registries.conf")
REPOSITORY = "multiarch/builder"
# The project's wheel is made from these; nothing else of the checkout goes in.
WHEEL_SOURCES = ("pyproject.toml", "README.md", "multiarch", "flows", "tasks")
# A fixed time for the wheel's files and every layer: the same inputs give the same
# digests, and the context of an unchanged checkout is byte-identical between runs.
SOURCE_DATE_EPOCH = 1686355200
# The image's Python is Debian 12's 3.11.2 on each of these machines. The full version
# matters: markers such as `python_full_version < "3.11.3"` (redis) pick dependencies.
MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}
IMAGE_PYTHON = "3.11.2"


@dataclass(frozen=True)
class BuilderContext:
    path: Path
    version: str
    key: str  # hash of every input of the image: the context and the Debian base's key


def project_version(repo_root: Path = REPO_ROOT) -> str:
    with (repo_root / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def builder_reference(address: str, *, tag: str) -> str:
    return f"{address}/{REPOSITORY}:{tag}"


def prepare_context(*, dest: Path, repo_root: Path = REPO_ROOT,
                    wheel_cache: Path | None = None) -> BuilderContext:
    """Fill `dest` with the Containerfile, its config files, the wheel, requirements.txt
    (the project's dependencies) and constraints.txt (the host venv's versions).

    Files are rewritten only when their bytes change, so the context digest of an unchanged
    checkout stays the same and `rebuild: if-changed` skips the build. Downloaded
    wheelhouses are kept in `wheel_cache` (default `<repo>/.local/wheelhouse`), shared by
    every context of the checkout.
    """
    wheel_cache = wheel_cache or repo_root / ".local" / "wheelhouse"
    dest.mkdir(parents=True, exist_ok=True)
    for name in CONTEXT_FILES:
        _write_if_changed(dest / name, (repo_root / "deployments" / "builder" / name).read_bytes())
    with (repo_root / "pyproject.toml").open("rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    _write_if_changed(dest / "requirements.txt", "".join(f"{d}\n" for d in dependencies).encode())
    _write_if_changed(dest / "constraints.txt", host_constraints().encode())
    download_wheels(dest=dest / "wheelhouse", requirements=dest / "requirements.txt",
                    constraints=dest / "constraints.txt", cache_dir=wheel_cache)
    wheel = build_wheel(repo_root=repo_root)
    wheels = dest / "wheels"
    wheels.mkdir(exist_ok=True)
    for stale in wheels.iterdir():
        if stale.name != wheel.name:
            stale.unlink()
    _write_if_changed(wheels / wheel.name, wheel.read_bytes())
    shutil.rmtree(wheel.parents[1], ignore_errors=True)  # the scratch dir of build_wheel
    key = hashlib.sha256(f"{tree_digest(dest)} {cache_key(ARCHES)}".encode()).hexdigest()[:16]
    return BuilderContext(path=dest, version=project_version(repo_root), key=key)


def host_constraints() -> str:
    """`pip freeze` of the venv running this (the one the tests pass with), minus the
    project itself: the image installs the same dependency versions."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable",
         "--disable-pip-version-check"],
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise ConfigurationError(f"pip freeze failed: {done.stderr.strip()[-400:]}")
    lines = [
        line for line in done.stdout.splitlines()
        if line and not line.startswith(("-e", "#")) and " @ " not in line
        and not line.lower().startswith("multiarch-builder=")
    ]
    return "".join(f"{line}\n" for line in sorted(lines, key=str.lower))


def wheel_platforms(machine: str) -> list[str]:
    """Every manylinux tag Debian 12's glibc 2.36 runs, newest first: pip's --platform
    matches the tags it is given, not the older ones a glibc also accepts."""
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(36, 16, -1)]
    tags.append(f"manylinux2014_{machine}")
    if machine == "x86_64":
        tags += [f"manylinux2010_{machine}", f"manylinux1_{machine}"]
    return tags


def debian_python(venv: Path) -> str:
    """A throwaway venv of Debian's own python3 (the image's 3.11.2) for `pip download`.

    pip evaluates environment markers with the interpreter it runs in, whatever
    --python-version says, and the host venv's Python may be another patch release: redis
    needs async-timeout only on `python_full_version < "3.11.3"`, which a 3.11.7 pip drops.
    """
    python = "/usr/bin/python3"
    done = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0 or done.stdout.strip() != IMAGE_PYTHON:
        raise ConfigurationError(
            f"{python} is {done.stdout.strip() or 'missing'}, the builder image's Python is "
            f"{IMAGE_PYTHON}: the dependency wheels are resolved with Debian 12's python3 "
            "(apt-get install python3-venv)"
        )
    created = subprocess.run([python, "-m", "venv", str(venv)], capture_output=True,
                             text=True, check=False)
    if created.returncode != 0:
        raise ConfigurationError(
            f"python3 -m venv failed (apt-get install python3-venv): {created.stderr[-400:]}"
        )
    return str(venv / "bin" / "python")


def download_wheels(*, dest: Path, requirements: Path, constraints: Path,
                    cache_dir: Path) -> None:
    """The dependencies' wheels for every architecture of the image, fetched on the host.

    The image's pip step then installs from them with --no-index: it needs no network
    inside RUN (the build machine's proxy CA stays out of the image) and does no downloads
    under QEMU. Binary wheels only: an sdist would compile under emulation. The download
    runs only when the requirements or constraints changed (`.key` in the wheelhouse), into
    a fresh directory, so the wheelhouse holds exactly what the image installs.
    """
    platforms = {arch: wheel_platforms(machine) for arch, machine in MACHINES.items()}
    material = requirements.read_bytes() + constraints.read_bytes() + json.dumps(
        ["debian-python3", IMAGE_PYTHON, *(platforms[arch] for arch in ARCHES)]).encode()
    key = hashlib.sha256(material).hexdigest()
    stamp = dest / ".key"
    if stamp.is_file() and stamp.read_text() == key:
        return
    cached = cache_dir / key[:16]
    if not (cached / ".key").is_file():
        _download(cached, key=key, platforms=platforms, requirements=requirements,
                  constraints=constraints)
    partial = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(cached, partial, copy_function=os.link)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(partial, dest)


def _download(dest: Path, *, key: str, platforms: dict[str, list[str]], requirements: Path,
              constraints: Path) -> None:
    """`pip download` of every architecture's wheels into `dest`, complete or not at all."""
    partial = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    python = debian_python(partial / ".venv")
    for arch in ARCHES:
        argv = [
            python, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--only-binary=:all:", *(f"--platform={tag}" for tag in platforms[arch]),
            "--python-version", IMAGE_PYTHON, "--implementation", "cp", "--abi", "cp311",
            "--dest", str(partial), "-r", str(requirements), "-c", str(constraints),
        ]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise ConfigurationError(
                f"pip download of the builder image's dependencies for {arch} failed: "
                f"{done.stderr.strip()[-600:]}"
            )
    shutil.rmtree(partial / ".venv")
    (partial / ".key").write_text(key)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(partial, dest)


def build_wheel(*, repo_root: Path = REPO_ROOT) -> Path:
    """The project's wheel, built from a clean copy of its sources.

    A copy, because setuptools reuses `build/` in the source tree and would carry modules
    deleted since; SOURCE_DATE_EPOCH makes the zip's timestamps fixed, so the same sources
    give the same wheel bytes. Returns `<scratch>/wheel/<name>.whl`; the caller removes
    `<scratch>` (the wheel's grandparent).
    """
    scratch = Path(tempfile.mkdtemp(prefix="multiarch-wheel-"))
    source = scratch / "src"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in WHEEL_SOURCES:
        path = repo_root / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    out = scratch / "wheel"
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH)}
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--disable-pip-version-check", "--wheel-dir", str(out), str(source)],
        capture_output=True, text=True, env=env, check=False,
    )
    wheels = sorted(out.glob("*.whl")) if out.is_dir() else []
    if done.returncode != 0 or len(wheels) != 1:
        shutil.rmtree(scratch, ignore_errors=True)
        raise ConfigurationError(
            f"pip wheel could not build the project's wheel: {done.stderr.strip()[-600:]}"
        )
    return wheels[0]


def builder_request(
    *, address: str, context: BuilderContext, base: str, work_dir: Path
) -> BuildRequest:
    return BuildRequest(
        image=builder_reference(address, tag=context.version),
        tags=("latest",),
        platforms=tuple(f"linux/{arch}" for arch in ARCHES),
        context=str(context.path),
        build_args={"BASE": base},
        allow_emulation=True,
        insecure_registry=True,
        rebuild="if-changed",
        cache="registry",
        source_date_epoch=SOURCE_DATE_EPOCH,
        runner=RunnerOptions(work_dir=str(work_dir)),
    )


def ensure_builder(
    address: str,
    *,
    state_dir: Path,
    log: logging.Logger,
    repo_root: Path = REPO_ROOT,
    base_cache_dir: Path | None = None,
    work_dir: Path | None = None,
    context_dir: Path | None = None,
) -> str:
    """The Debian base (cached tars), then the builder image; returns its version tag."""
    work_dir = work_dir or state_dir / "work"
    base = ensure_debian_base(
        address, state_dir=state_dir, log=log, cache_dir=base_cache_dir, work_dir=work_dir
    )
    context = prepare_context(dest=context_dir or state_dir / "builder" / "context",
                              repo_root=repo_root)
    request = builder_request(address=address, context=context, base=base, work_dir=work_dir)
    result = build_and_publish(request, log=log)
    reference = builder_reference(address, tag=context.version)
    log.info(f"builder image: {reference} (+ :latest) -> {result.index_digest}")
    return reference


def cached_builder(
    address: str,
    *,
    images_dir: Path,
    log: logging.Logger,
    repo_root: Path = REPO_ROOT,
    base_cache_dir: Path | None = None,
) -> str:
    """Put this checkout's builder image into the registry at `address`; return its reference.

    For registries that start empty (a test session's): the image is kept as an OCI layout
    `<images_dir>/builder-<key>`, the key hashing every input (the Debian base's key, the
    Containerfile and its files, the wheel, the requirements and constraints), and restored
    with `skopeo copy --all` (digests preserved). On a miss it is built in a registry kept
    under `<images_dir>/registry` between sessions, which also holds the base and the layer
    cache (`cache: registry`), so a code change only runs the wheel's layer again.
    """
    context = prepare_context(dest=images_dir / "builder-context", repo_root=repo_root)
    layout = images_dir / f"builder-{context.key}"
    if not (layout / "index.json").is_file():
        log.info(f"builder image: no cached copy for key {context.key}, building it")
        _build_layout(context, layout=layout, images_dir=images_dir, log=log,
                      repo_root=repo_root, base_cache_dir=base_cache_dir)
    reference = builder_reference(address, tag=context.version)
    _skopeo_copy(f"oci:{layout}:builder", f"docker://{reference}", dest_insecure=True)
    return reference


def _build_layout(
    context: BuilderContext,
    *,
    layout: Path,
    images_dir: Path,
    log: logging.Logger,
    repo_root: Path,
    base_cache_dir: Path | None,
) -> None:
    """Build in the persistent cache registry, then save the image as an OCI layout."""
    from devtools.registry import free_port, start_registry, stop_registry

    registry_dir = images_dir / "registry"
    registry = start_registry(state_dir=registry_dir, port=free_port())
    try:
        with tempfile.TemporaryDirectory(prefix="builder-work-", dir="/var/tmp") as work:
            reference = ensure_builder(
                registry.address, state_dir=images_dir, log=log, repo_root=repo_root,
                base_cache_dir=base_cache_dir, work_dir=Path(work), context_dir=context.path,
            )
        partial = layout.with_name(f".{layout.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        _skopeo_copy(f"docker://{reference}", f"oci:{partial}:builder", src_insecure=True)
        os.replace(partial, layout)
    finally:
        stop_registry(state_dir=registry_dir)
    for stale in images_dir.glob("builder-*"):
        if stale.is_dir() and stale != layout and stale != context.path:
            shutil.rmtree(stale, ignore_errors=True)


def _skopeo_copy(source: str, dest: str, *, src_insecure: bool = False,
                 dest_insecure: bool = False) -> None:
    argv = ["skopeo", "copy", "--all", "--quiet", "--preserve-digests"]
    if src_insecure:
        argv.append("--src-tls-verify=false")
    if dest_insecure:
        argv.append("--dest-tls-verify=false")
    done = subprocess.run([*argv, source, dest], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ConfigurationError(
            f"skopeo copy {source} -> {dest} failed: {done.stderr.strip()[-600:]}"
        )


def _write_if_changed(target: Path, content: bytes) -> None:
    """Replace `target` only when its bytes differ (atomically), keeping its mtime else."""
    if target.is_file() and target.read_bytes() == content:
        return
    partial = target.with_name(f".{target.name}.partial")
    partial.write_bytes(content)
    partial.chmod(0o644)
    os.replace(partial, target)
