"""Checks that take seconds and save minutes: run before any build starts.

Without them a wrong `--target`, a full or read-only work directory or an unreachable
registry fails only after every platform has built (measured: 9 s for a missing stage,
57 s for an unreachable registry). Each check raises ConfigurationError with one line that
starts with the field at fault and says what to do; passing checks return notes for the log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from pathlib import Path

from multiarch.build_secrets import check_build_secrets
from multiarch.buildah_features import check_supported, local_buildah_version
from multiarch.cache_checks import check_cache_access, check_cache_use
from multiarch.containerfile import stages
from multiarch.context_hygiene import check_context_hygiene
from multiarch.errors import ConfigurationError, TransientError
from multiarch.rebuild import read_containerfile
from multiarch.registry_api import check_push_access
from multiarch.request import BuildRequest, check_path_for_oci
from multiarch.signing import check_signing_key
from multiarch.source import PinnedSource
from multiarch.workspace import DEFAULT_WORK_DIR, run_dirs

GIB = 1024**3
MIN_FREE_BYTES = 1 * GIB  # below this a build of even a small image may run out mid-way
PROBE_NAME = ".multiarch-preflight-probe"
EXAMPLE_DIRS = {"work_dir": DEFAULT_WORK_DIR, "shared_dir": f"{DEFAULT_WORK_DIR}/shared"}


def preflight_request(request: BuildRequest, source: PinnedSource | None = None) -> list[str]:
    """Every check that needs no build: directories, the target stage, the registry.

    For a git context the target stage can be read only once the source is pinned: pass
    `source` then (the flow does, right after pinning); without it that check is skipped.
    """
    notes = [*check_directories(request)]
    notes += check_context(request, source)
    notes += check_target(request, source)
    notes += check_buildah_features(request, source)
    notes += check_registry(request)
    notes += check_cache_access(request) + check_cache_use(request, source)
    notes += check_signing_file(request)
    notes += check_build_secrets(request, source)
    return notes


def check_context(request: BuildRequest, source: PinnedSource | None) -> list[str]:
    """The Containerfile does not resolve outside the context, and no secret-looking file
    goes into the image unnoticed (multiarch.context_hygiene): a warning note, or refused.

    For a git context the tree is known only once the source is pinned: the flow calls this
    again with `source` right after pinning.
    """
    source = _pinned(request, source)
    if source is None:
        return ["context: files and the Containerfile's path checked once the git source "
                "is pinned"]
    return check_context_hygiene(request, source)


def check_signing_file(request: BuildRequest) -> list[str]:
    """A signing key file can be checked anywhere, even before Prefect starts."""
    note = check_signing_key(key_file=request.supply_chain.sign_key_file)
    return [note] if note else []


def check_signing_block(request: BuildRequest) -> list[str]:
    """A Secret block only once the flow runs (the CLI checks before its temporary
    server starts). On Kubernetes the key is a Secret only the publish pod can read."""
    note = check_signing_key(key_block=request.supply_chain.sign_key_block)
    return [note] if note else []


def check_directories(request: BuildRequest) -> list[str]:
    """Work directory (and, for the local runner, the shared one): writable, with room."""
    dirs = run_dirs(request, run_id="preflight")
    if request.runner.kind != "local":  # builds run in pods: here only run records are kept
        return [check_directory("work_dir", dirs.work, min_free=0)]
    if request.handoff != "shared":  # the layouts stay in each build's scratch space
        return [check_directory("work_dir", dirs.work)]
    return [check_directory("work_dir", dirs.work), check_directory("shared_dir", dirs.shared)]


def check_directory(field: str, path: Path, *, min_free: int = MIN_FREE_BYTES) -> str:
    """Create the directory, write and delete a probe file, measure free space, and remove
    what was created: a refused run leaves nothing behind, not even an empty directory."""
    try:
        check_path_for_oci(str(path))
    except ValueError as exc:
        raise ConfigurationError(f"{field}: {exc}") from exc
    # One check at a time in a process: a fleet preflights several builds at once, and one
    # check removing the directory it created must not pull it from under another's probe.
    with _directory_checks:
        return _check_directory(field, path, min_free=min_free)


_directory_checks = threading.Lock()


def _check_directory(field: str, path: Path, *, min_free: int) -> str:
    created = [parent for parent in [path, *path.parents] if not parent.exists()]
    probe = path / f"{PROBE_NAME}-{os.getpid()}-{threading.get_ident()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"multiarch preflight\n")
        probe.unlink()
        free = shutil.disk_usage(path).free
    except OSError as exc:
        raise ConfigurationError(
            f"{field}: {path} is not writable ({exc.strerror or exc}): choose a directory "
            f"this user can create and write, e.g. --{field.replace('_', '-')} "
            f"{EXAMPLE_DIRS[field]}"
        ) from exc
    finally:
        for directory in created:  # deepest first
            with contextlib.suppress(OSError):
                directory.rmdir()
    if free < min_free:
        raise ConfigurationError(
            f"{field}: {path} has {free / GIB:.2f} GiB free, less than the "
            f"{min_free / GIB:.0f} GiB a build needs: free space there or choose another "
            f"--{field.replace('_', '-')}"
        )
    return f"{field}: {path} is writable, {free / GIB:.1f} GiB free"


def check_target(request: BuildRequest, source: PinnedSource | None) -> list[str]:
    """`--target` names a stage of the Containerfile (buildah says so only mid-build)."""
    if request.target is None:
        return []
    text = _containerfile(request, source)
    if text is None:
        return ["target: checked once the git source is pinned"]
    names = [stage.alias for stage in stages(text, request.build_args) if stage.alias]
    if request.target.lower() not in {name.lower() for name in names}:
        known = f"its stages: {', '.join(names)}" if names else "it names no stage"
        raise ConfigurationError(
            f"target: stage {request.target!r} is not in the Containerfile ({known}, as in "
            "FROM ... AS NAME): name one of them, or drop --target to build the last stage"
        )
    return [f"target: stage {request.target} found"]


def check_buildah_features(request: BuildRequest, source: PinnedSource | None) -> list[str]:
    """Every Containerfile line uses only what the builder's buildah has (buildah would
    fail mid-build on each platform, or ignore a `COPY --exclude`).

    The local runner's buildah is asked; Kubernetes pods run the builder image's, which
    this machine cannot ask before the Job starts.
    """
    if request.runner.kind != "local":
        return []
    text = _containerfile(request, source)
    if text is None:
        return ["file: checked once the git source is pinned"]
    return check_supported(text, local_buildah_version(request.runner.toolchain),
                           path=request.containerfile or "Containerfile",
                           build_args=request.build_args, image_format=request.image_format)


def _pinned(request: BuildRequest, source: PinnedSource | None) -> PinnedSource | None:
    """The source to read: a local context is its own; a git one only once pinned."""
    if source is None and not request.is_git:
        return PinnedSource(kind="local", location=str(Path(request.context).resolve()))
    return source


def _containerfile(request: BuildRequest, source: PinnedSource | None) -> str | None:
    """The Containerfile's text; None for a git context before its source is pinned."""
    source = _pinned(request, source)
    return None if source is None else read_containerfile(request, source)


def check_registry(request: BuildRequest) -> list[str]:
    """The registry answers and accepts this machine's credentials for a push.

    Binding for the local runner only: Kubernetes build pods push with their own Secret,
    possibly to a registry only the cluster can reach, so there a refusal is a note.

    A passing failure (503, a timeout) is only noted: the push retries on its own, and a
    hiccup now says nothing about the registry in a few minutes.
    """
    try:
        check_push_access(request.image, request.insecure_registry)
    except ConfigurationError as exc:
        if request.runner.kind != "local":  # pods may reach (and log in to) what we cannot
            return [f"image: not checked from this machine: {exc}"]
        raise ConfigurationError(f"image: {exc}") from exc
    except TransientError as exc:
        return [f"image: registry push check passed over a transient failure: {exc}"]
    return [f"image: {request.image.registry} accepts a push to {request.image.repository}"]
