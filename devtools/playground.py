"""The one-machine playground: a local registry, QEMU for arm64, an offline base image.

No public registry is reachable from many build machines (and none from ours), so the
examples build FROM a small multi-arch busybox image that this module makes from Debian's
`busybox-static` packages and pushes into the local registry, using the project's own
build and publish code.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devtools.busybox import prepare_busybox_context
from devtools.registry import LocalRegistry, registry_status, start_registry, stop_registry
from multiarch.emulation import ensure_emulation, host_architecture
from multiarch.orchestrate import build_and_publish
from multiarch.registry import RegistryTarget, fetch_manifest
from multiarch.request import BuildRequest, RunnerOptions

BASE_REPOSITORY = "library/busybox"
BASE_TAG = "latest"
PLAYGROUND_ARCHES = ("amd64", "arm64")


def base_image(address: str) -> str:
    return f"{address}/{BASE_REPOSITORY}:{BASE_TAG}"


def console_logger() -> logging.Logger:
    logger = logging.getLogger("multiarch.playground")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def up(*, state_dir: Path, port: int = 5000, rebuild_base: bool = False) -> LocalRegistry:
    """Idempotent: start what is not running, build the base image if it is missing."""
    log = console_logger()
    registry = start_registry(state_dir=state_dir / "registry", port=port)
    log.info(f"registry: {registry.url} (data in {registry.data_dir})")
    for arch in PLAYGROUND_ARCHES:
        if arch != host_architecture():
            ensure_emulation(arch)
            log.info(f"emulation: qemu for {arch} registered in binfmt_misc")
    ensure_base_image(registry.address, state_dir=state_dir, rebuild=rebuild_base, log=log)
    return registry


def ensure_base_image(
    address: str, *, state_dir: Path, rebuild: bool = False, log: logging.Logger
) -> str:
    """Push the busybox base image for amd64 and arm64 unless the registry already has it."""
    reference = base_image(address)
    target = RegistryTarget(name=f"{address}/{BASE_REPOSITORY}", insecure=True)
    if not rebuild and fetch_manifest(reference, target=target) is not None:
        log.info(f"base image: {reference} already present")
        return reference
    context = prepare_busybox_context(
        dest=state_dir / "base-context", cache_dir=state_dir / "debs", arches=PLAYGROUND_ARCHES
    )
    digest = publish_local_base(reference, context=context, arches=PLAYGROUND_ARCHES,
                                work_dir=state_dir / "work", log=log)
    log.info(f"base image: {reference} -> {digest}")
    return reference


def publish_local_base(reference: str, *, context: Path, arches: Sequence[str],
                       work_dir: Path, log: logging.Logger, **options: Any) -> str:
    """Build a base image's context for `arches` with the project's own flow and push it to
    a registry on this machine (plain http; foreign arches through QEMU); return the index
    digest. The busybox and Debian bases differ only in their context and `options`."""
    request = BuildRequest(
        image=reference,
        platforms=tuple(f"linux/{arch}" for arch in arches),
        context=str(context),
        allow_emulation=True,
        insecure_registry=True,
        runner=RunnerOptions(work_dir=str(work_dir)),
        **options,
    )
    return build_and_publish(request, log=log).index_digest


def down(*, state_dir: Path) -> None:
    stopped = stop_registry(state_dir=state_dir / "registry")
    console_logger().info("registry stopped" if stopped else "registry was not running")


def status(*, state_dir: Path, port: int) -> str:
    registry = LocalRegistry(host="127.0.0.1", port=port, state_dir=state_dir / "registry")
    pid = registry_status(registry).pid or "none"
    return f"registry {registry.url} pid {pid}; base image {base_image(registry.address)}"
