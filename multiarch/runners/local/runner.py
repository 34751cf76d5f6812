"""The local runner: execute a platform's plan with subprocesses on this machine.

This is the newcomer's path (no cluster): the same plan the Kubernetes runner turns into
a Job runs here step by step. Foreign architectures need QEMU user emulation, which must
be asked for explicitly; their results are flagged `emulated` so nobody mistakes an
emulated build's timings or behaviour for native ones.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from multiarch.attest import SupplyChainPlan
from multiarch.build_secrets import (
    SHORT_TMP_LINK,
    block_secret_files,
    local_secrets,
    ssh_tmpdir,
)
from multiarch.buildah_features import local_tools
from multiarch.cache_mounts import cache_mounts
from multiarch.emulation import emulation_status, host_architecture, qemu_name
from multiarch.errors import ConfigurationError, StepFailure
from multiarch.handoff import handoff_named
from multiarch.oci import read_layout_image
from multiarch.plan import PlanPaths, plan_build, sandbox_tmp
from multiarch.platforms import Platform
from multiarch.process import Step, run_step
from multiarch.publish import publish_request
from multiarch.request import BuildRequest
from multiarch.results import BuildResult, PlatformImage
from multiarch.runclaim import RUNS_DIR, remove_tree
from multiarch.runners import LineLogger, RunContext
from multiarch.runners.local.toolchain_steps import in_toolchain, toolchain_for
from multiarch.source import PinnedSource, write_git_store
from multiarch.tagjournal import journal_path
from multiarch.toolchain import ENTER_SCRIPT, emulation_problem
from multiarch.workspace import RunDirs

# Tool -> the Debian package that ships it. runc runs each RUN step in its own
# namespaces (buildah --isolation oci); unshare gives each step a PID namespace.
REQUIRED_TOOLS = {"buildah": "buildah", "skopeo": "skopeo", "runc": "runc",
                  "unshare": "util-linux"}
# With the debian13 toolchain buildah, skopeo and runc come from its rootfs.
TOOLCHAIN_HOST_TOOLS = {"unshare": "util-linux"}
LineEmit = Callable[[str], None]


def describe(step: Step) -> str:
    """The first words of the step's own command (after a toolchain helper's `--`)."""
    argv = step.argv[step.argv.index("--") + 1:] if ENTER_SCRIPT in step.argv else step.argv
    return " ".join(argv[:4])


def platform_paths(request: BuildRequest, dirs: RunDirs, platform: Platform) -> PlanPaths:
    """Build store and checkout in the platform's scratch; the layout where the handoff says."""
    scratch = dirs.scratch(platform)
    return PlanPaths(
        checkout=str(scratch / "src"),
        storage_root=str(scratch / "storage" / "root"),
        storage_runroot=str(scratch / "storage" / "runroot"),
        layout=str(handoff_named(request.handoff).layout_dir(dirs, platform)),
        digest_file=str(scratch / "digest") if request.handoff == "registry" else None,
    )


def is_native(platform: Platform) -> bool:
    return platform.architecture == host_architecture()


def preflight(request: BuildRequest, emit: LineEmit | None = None) -> list[str]:
    """Check tools and emulation before any build starts; returns notes for the log.

    With `toolchain: debian13` the rootfs is built here on a miss (about a minute, once per
    machine), so a build never starts without its tools."""
    toolchain = toolchain_for(request.runner.toolchain, emit)
    wanted = {**(REQUIRED_TOOLS if toolchain is None else TOOLCHAIN_HOST_TOOLS),
              **({"git": "git"} if request.is_git else {})}
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
        problem = None if toolchain is None else emulation_problem(
            qemu_name(platform.architecture))
        if problem is not None:
            raise ConfigurationError(f"platforms: {platform} under the debian13 toolchain: "
                                     f"{problem}")
        notes.append(f"{platform}: emulated with QEMU on this {host} host")
    notes.append(f"toolchain: {local_tools(request.runner.toolchain)}")
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
    paths = platform_paths(request, dirs, platform)
    if source.kind == "git":  # credentials by file path, never on argv (multiarch.credentials)
        paths = replace(paths, git_credentials=write_git_store(
            request, dirs.run_scratch / f"{platform.slug}.git-credentials"))
    with ssh_tmpdir(request) as short_tmp:
        return _build_platform(request, source, platform, dirs=dirs, log=log, paths=paths,
                               short_tmp=short_tmp)


def _build_platform(request: BuildRequest, source: PinnedSource, platform: Platform, *,
                    dirs: RunDirs, log: LineLogger, paths: PlanPaths,
                    short_tmp: Path | None) -> PlatformImage:
    scratch = dirs.scratch(platform)
    secrets_dir = scratch / "secrets"  # block secrets' values, 0600, gone after the build
    paths = replace(paths, secret_files=block_secret_files(request, secrets_dir),
                    tmpdir=str(short_tmp / SHORT_TMP_LINK) if short_tmp else None)
    plan = plan_build(request, source, platform, paths, run_id=dirs.run_id)
    layout = Path(plan.layout)
    steps = plan.steps
    toolchain = toolchain_for(request.runner.toolchain)
    if toolchain is not None:
        steps = in_toolchain(steps, toolchain=toolchain, emulated=not is_native(platform),
                             writable=[str(dirs.work), str(layout.parent)])
    _fresh_dir(scratch)
    Path(sandbox_tmp(paths)).mkdir(parents=True)
    if paths.tmpdir:
        Path(paths.tmpdir).symlink_to(sandbox_tmp(paths))
    shutil.rmtree(layout, ignore_errors=True)  # a retry starts from an empty layout
    layout.parent.mkdir(parents=True, exist_ok=True)
    label = f"[{platform}]"
    started = time.monotonic()
    started_at = datetime.now(UTC)
    deadline = started + request.runner.timeout_s
    try:
        with cache_mounts(dirs.work, platform, tmpdir=Path(sandbox_tmp(paths))), \
                local_secrets(request, secrets_dir) as secrets:
            for step in steps:
                log.info(f"{label} step {step.name}: {describe(step)} ...")
                try:  # a RUN step that prints a secret's value: masked in logs and errors
                    run_step(step, emit=lambda line: log.info(f"{label} {secrets.mask(line)}"),
                             deadline=deadline, label=label)
                except StepFailure as exc:
                    raise secrets.masked(exc) from None
                if step.name == "build":
                    secrets.forget()
        image = read_layout_image(layout, plan.layout_ref)  # in scratch for the registry handoff
    finally:
        remove_scratch(scratch)
    shared = request.handoff == "shared"
    return PlatformImage(
        platform=platform,
        digest=image.manifest_digest,
        size=image.total_size,
        emulated=not is_native(platform),
        duration_s=time.monotonic() - started,
        handoff=request.handoff,
        layout=str(layout) if shared else None,
        layout_ref=plan.layout_ref,
        reference=None if shared else request.image.with_digest(image.manifest_digest),
        node_architecture=host_architecture(),
        node=socket.gethostname(),
        builder=local_tools(request.runner.toolchain),
        started_at=started_at,
        finished_at=datetime.now(UTC),
    )


def remove_scratch(path: Path) -> None:
    """Delete a build's scratch space, unmounting what container storage left there."""
    remove_tree(path)


def _fresh_dir(path: Path) -> None:
    remove_scratch(path)
    path.mkdir(parents=True)


class LocalRunner:
    """Builds on this machine; publishes from this process (the layouts are here)."""

    def preflight(self, request: BuildRequest) -> list[str]:
        return preflight(request)

    def build(self, request: BuildRequest, source: PinnedSource, platform: Platform,
              run: RunContext) -> PlatformImage:
        return build_platform(request, source, platform, dirs=run.dirs, log=run.log)

    def publish(self, request: BuildRequest, source: PinnedSource,
                images: list[PlatformImage], run: RunContext,
                annotations: Mapping[str, str] | None = None,
                supply: SupplyChainPlan | None = None) -> BuildResult:
        return publish_request(request, source, images, index_dir=run.dirs.run_shared / "index",
                               emit=run.log.info, annotations=annotations, supply=supply,
                               journal=journal_path(run.dirs.work / RUNS_DIR, run.run_id))

    def cleanup(self, request: BuildRequest, run: RunContext) -> None:
        """The run's scratch space, and its handoff unless it is to be kept."""
        remove_tree(run.dirs.run_scratch)
        handoff_named(request.handoff).cleanup(run.dirs, keep=request.runner.keep_shared)

    def stop(self) -> None:
        """Local steps are the process layer's; `runners.stop_all` kills them."""

    def stop_build(self) -> None:
        """Local steps are the process layer's; `process.kill_scope_steps` kills them."""


RUNNER = LocalRunner()
