"""The local runner: execute a platform's plan with subprocesses on this machine.

This is the newcomer's path (no cluster): the same plan the Kubernetes runner turns into
a Job runs here step by step. Foreign architectures need QEMU user emulation, which must
be asked for explicitly; their results are flagged `emulated` so nobody mistakes an
emulated build's timings or behaviour for native ones.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from multiarch.emulation import emulation_status, host_architecture
from multiarch.errors import ConfigurationError
from multiarch.oci import read_layout_image
from multiarch.plan import PlanPaths, plan_build, sandbox_tmp
from multiarch.platforms import Platform
from multiarch.process import run_step
from multiarch.request import BuildRequest
from multiarch.results import PlatformImage
from multiarch.runclaim import remove_tree
from multiarch.source import PinnedSource, write_git_store

DEFAULT_WORK_DIR = "/var/tmp/multiarch"  # noqa: S108 - a fixed, root-owned scratch root
# Tool -> the Debian package that ships it. runc runs each RUN step in its own
# namespaces (buildah --isolation oci); unshare gives each step a PID namespace.
REQUIRED_TOOLS = {"buildah": "buildah", "skopeo": "skopeo", "runc": "runc",
                  "unshare": "util-linux"}


class LineLogger(Protocol):
    def info(self, msg: str, /) -> None: ...


@dataclass(frozen=True, kw_only=True)
class RunDirs:
    """Where one run keeps its files on this machine."""

    work: Path
    shared: Path
    run_id: str

    @property
    def run_shared(self) -> Path:
        """The run's handoff directory: one OCI layout per platform, then the index."""
        return self.shared / self.run_id

    @property
    def run_scratch(self) -> Path:
        """The run's local scratch space: one directory per platform below it."""
        return self.work / "builds" / self.run_id

    def platform_paths(self, platform: Platform) -> PlanPaths:
        scratch = self.scratch(platform)
        return PlanPaths(
            checkout=str(scratch / "src"),
            storage_root=str(scratch / "storage" / "root"),
            storage_runroot=str(scratch / "storage" / "runroot"),
            layout=str(self.run_shared / platform.slug),
        )

    def scratch(self, platform: Platform) -> Path:
        return self.run_scratch / platform.slug


def run_dirs(request: BuildRequest, run_id: str) -> RunDirs:
    work = Path(request.runner.work_dir or os.environ.get("MULTIARCH_WORK_DIR", DEFAULT_WORK_DIR))
    shared = Path(request.runner.shared_dir) if request.runner.shared_dir else work / "shared"
    return RunDirs(work=work.resolve(), shared=shared.resolve(), run_id=run_id)


def is_native(platform: Platform) -> bool:
    return platform.architecture == host_architecture()


def preflight(request: BuildRequest) -> list[str]:
    """Check tools and emulation before any build starts; returns notes for the log."""
    wanted = {**REQUIRED_TOOLS, **({"git": "git"} if request.is_git else {})}
    missing = {tool: package for tool, package in wanted.items() if shutil.which(tool) is None}
    if missing:
        raise ConfigurationError(
            f"missing tools for the local runner: {', '.join(missing)}: install the Debian "
            f"packages {' '.join(sorted(set(missing.values())))} (make deps does)"
        )
    notes = []
    host = host_architecture()
    for platform in request.platforms:
        if is_native(platform):
            notes.append(f"{platform}: native on this {host} host")
            continue
        if not request.allow_emulation:
            raise ConfigurationError(
                f"platforms: {platform} cannot run natively on this {host} host: pass "
                "--allow-emulation (allow_emulation=true) to build it under QEMU, or build it "
                "on a native node with the kubernetes runner"
            )
        status = emulation_status(platform.architecture)
        if not status.available:
            raise ConfigurationError(
                f"platforms: {platform} needs QEMU emulation, but {status.reason}"
            )
        notes.append(f"{platform}: emulated with QEMU on this {host} host")
    return notes


def build_platform(
    request: BuildRequest,
    source: PinnedSource,
    platform: Platform,
    *,
    dirs: RunDirs,
    log: LineLogger,
) -> PlatformImage:
    """Run one platform's plan and return its image, read back from the layout."""
    paths = dirs.platform_paths(platform)
    if source.kind == "git":  # credentials by file path, never on argv (multiarch.credentials)
        paths = replace(paths, git_credentials=write_git_store(
            request, dirs.run_scratch / f"{platform.slug}.git-credentials"))
    plan = plan_build(request, source, platform, paths, run_id=dirs.run_id)
    scratch = dirs.scratch(platform)
    layout = Path(plan.layout)
    _fresh_dir(scratch)
    Path(sandbox_tmp(paths)).mkdir(parents=True)
    shutil.rmtree(layout, ignore_errors=True)  # a retry starts from an empty layout
    layout.parent.mkdir(parents=True, exist_ok=True)
    label = f"[{platform}]"
    started = time.monotonic()
    deadline = started + request.runner.timeout_s
    try:
        for step in plan.steps:
            log.info(f"{label} step {step.name}: {' '.join(step.argv[:4])} ...")
            run_step(
                step, emit=lambda line: log.info(f"{label} {line}"), deadline=deadline, label=label
            )
    finally:
        remove_scratch(scratch)
    image = read_layout_image(layout, plan.layout_ref)
    return PlatformImage(
        platform=platform,
        digest=image.manifest_digest,
        size=image.total_size,
        emulated=not is_native(platform),
        duration_s=time.monotonic() - started,
        layout=str(layout),
        layout_ref=plan.layout_ref,
    )


def remove_run_dirs(dirs: RunDirs, *, keep_shared: bool) -> None:
    """Drop the run's scratch space, and its handoff directory unless it is to be kept."""
    remove_tree(dirs.run_scratch)
    if not keep_shared:
        remove_tree(dirs.run_shared)


def remove_scratch(path: Path) -> None:
    """Delete a build's scratch space, unmounting what container storage left there."""
    remove_tree(path)


def _fresh_dir(path: Path) -> None:
    remove_scratch(path)
    path.mkdir(parents=True)
