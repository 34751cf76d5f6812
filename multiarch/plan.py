"""Build steps as data: a pure function from (request, source, platform, paths) to argv lists.

Keeping the plan as data lets every runner execute the same steps (subprocesses here,
containers of a Kubernetes Job elsewhere) and lets tests compare whole argv lists. User
values travel as separate argv elements, so `$(...)`, quotes, `;` or newlines in a build
arg reach buildah verbatim: nothing here is ever parsed by a shell.
"""

from __future__ import annotations

from dataclasses import dataclass

from multiarch.build_secrets import buildah_flags
from multiarch.cache import cache_flags
from multiarch.credentials import clean_url, helper_config
from multiarch.handoff import handoff_named
from multiarch.handoff.layouts import LAYOUT_REF
from multiarch.ocispec import REVISION_LABEL, SOURCE_LABEL
from multiarch.platforms import Platform
from multiarch.process import Step
from multiarch.request import BuildRequest
from multiarch.source import FETCH_SCRIPT, PinnedSource

SOURCE_DATE_EPOCH_ARG = "SOURCE_DATE_EPOCH"


@dataclass(frozen=True, kw_only=True)
class PlanPaths:
    """Where a runner puts things; local paths for the local runner, mounts in a pod."""

    checkout: str  # where a git source is fetched to (unused for local contexts)
    storage_root: str  # container storage, on local disk (overlay fails over NFS)
    storage_runroot: str
    layout: str  # this platform's OCI image layout (where is the handoff's choice)
    digest_file: str | None = None  # where export also writes the manifest digest
    # Where the last step reports the digest for the runner (a pod's termination log), when
    # that is not export (the registry handoff's push).
    report_file: str | None = None
    # A git-credential-store file the fetch step's git reads (a path, never the secret);
    # None: the run has no git credentials.
    git_credentials: str | None = None
    # (secret id, file) the build step reads a build secret from: a Secret projected into
    # the pod, or a file the local runner wrote from a Secret block. Paths, never values.
    secret_files: tuple[tuple[str, str], ...] = ()
    # buildah's TMPDIR when not `sandbox_tmp` itself: a short link to it, for --ssh, whose
    # agent socket buildah makes under TMPDIR and a unix socket path must fit in 108 bytes.
    tmpdir: str | None = None


@dataclass(frozen=True, kw_only=True)
class BuildPlan:
    platform: Platform
    steps: tuple[Step, ...]
    image: str  # the local name buildah tags the result with
    layout: str
    layout_ref: str = LAYOUT_REF


def plan_build(
    request: BuildRequest,
    source: PinnedSource,
    platform: Platform,
    paths: PlanPaths,
    *,
    run_id: str,
) -> BuildPlan:
    image = f"localhost/multiarch/{platform.slug}:{run_id}"
    steps: list[Step] = []
    if source.kind == "git":
        steps += fetch_steps(source, checkout=paths.checkout, credentials=paths.git_credentials)
        context = paths.checkout
    else:
        context = source.location
    steps.append(build_step(request, source, platform, paths, context=context, image=image))
    steps += handoff_named(request.handoff).export_steps(request, paths, image=image)
    return BuildPlan(platform=platform, steps=tuple(steps), image=image, layout=paths.layout)


# A fixed script: the path arrives as "$1", never formatted into the script text.
PREPARE_LAYOUT_SCRIPT = 'rm -rf -- "$1" && mkdir -p -- "$(dirname -- "$1")"'


def prepare_layout_step(layout: str) -> Step:
    """In a pod: start from no layout (a retry must not inherit a half-written one) and make
    its parent, which skopeo requires. The local runner does the same in-process."""
    return Step(name="prepare", argv=("sh", "-c", PREPARE_LAYOUT_SCRIPT, "prepare", layout))


def fetch_steps(source: PinnedSource, *, checkout: str,
                credentials: str | None = None) -> list[Step]:
    """Clone without blobs, then check out the pinned commit: cheap and exact.

    `credentials` is the path of a git-credential-store file; git reads it through its
    store helper, so the secret is on neither the argv nor the environment of the step.
    """
    assert source.revision, "a git source is pinned before planning"
    return [
        Step(
            name="fetch",
            argv=("sh", "-c", FETCH_SCRIPT, "fetch", clean_url(source.location), checkout,
                  source.revision, *helper_config(credentials)),
            env={"GIT_TERMINAL_PROMPT": "0"},
        ),
    ]


def storage_flags(paths: PlanPaths, driver: str) -> tuple[str, ...]:
    return (
        "--root",
        paths.storage_root,
        "--runroot",
        paths.storage_runroot,
        "--storage-driver",
        driver,
    )


def build_step(
    request: BuildRequest,
    source: PinnedSource,
    platform: Platform,
    paths: PlanPaths,
    *,
    context: str,
    image: str,
) -> Step:
    isolation = isolation_flags(request.runner.kind)
    argv: list[str] = [
        "buildah",
        *storage_flags(paths, request.runner.storage_driver),
        "build",
        *isolation,
        "--platform",
        platform.build_text,
        "--format",
        request.image_format,
    ]
    if request.insecure_registry:
        argv.append("--tls-verify=false")
    if request.containerfile:
        argv += ["--file", f"{context.rstrip('/')}/{request.containerfile}"]
    for name, value in request.build_args.items():
        argv += ["--build-arg", f"{name}={value}"]
    argv += buildah_flags(request, paths.secret_files)  # --secret/--ssh/--build-context
    argv += reproducibility_flags(request, source)
    for key, value in provenance_labels(request, source).items():
        argv += ["--label", f"{key}={value}"]
    if request.target:
        argv += ["--target", request.target]
    argv += cache_flags(request, platform)
    env = {"BUILDAH_ISOLATION": isolation[1]}
    if request.runner.kind == "local":
        # runc's state and buildah's RUN bundles live in the build's scratch space, not in
        # /run/runc and /var/tmp: a killed build leaves them where its run's sweep looks.
        argv += ["--runtime-flag", f"root={paths.storage_runroot}/runc"]
        env["TMPDIR"] = paths.tmpdir or sandbox_tmp(paths)
    argv += ["--tag", image, context]
    return Step(name="build", argv=tuple(argv), env=env)


def reproducibility_flags(request: BuildRequest, source: PinnedSource) -> list[str]:
    """Pin every time buildah would take from the clock to the source's epoch.

    `--timestamp` sets the config's `created`, each history entry's and every layer file's
    mtime (buildah 1.28 has no --source-date-epoch). SOURCE_DATE_EPOCH also goes in as a
    build arg, BuildKit's convention, for tools in RUN steps that honour it; a user's own
    value wins. buildah only warns about a build arg that no ARG consumes.
    """
    if source.epoch is None:
        return []
    flags = ["--timestamp", str(source.epoch)]
    if SOURCE_DATE_EPOCH_ARG not in request.build_args:
        flags += ["--build-arg", f"{SOURCE_DATE_EPOCH_ARG}={source.epoch}"]
    return flags


def sandbox_tmp(paths: PlanPaths) -> str:
    """buildah's temporary directory for RUN bundles; the runner creates it."""
    return f"{paths.storage_runroot}/buildah-tmp"


def isolation_flags(runner_kind: str) -> tuple[str, ...]:
    """How a RUN step is confined, per runner.

    Local: a RUN step runs on the worker itself, so under `chroot` isolation (host mount,
    PID and network namespaces) a chroot escape reads the worker's files (the registry
    auth file) and signals its processes. `oci` with Debian's runc pivot_roots into the
    build root in its own mount, PID, IPC, UTS and network namespaces, and the RUN step's
    daemons die with it. Its network is buildah's default CNI bridge: outbound traffic is
    NATed (package installs work) while the worker's 127.0.0.1 services (the Prefect API,
    the local registry) are not reachable. Kubernetes: the pod is the sandbox, and runc
    cannot nest in an unprivileged pod, so the build keeps `chroot`.
    """
    if runner_kind == "kubernetes":
        return ("--isolation", "chroot")
    return ("--isolation", "oci", "--runtime", "runc")


def provenance_labels(request: BuildRequest, source: PinnedSource) -> dict[str, str]:
    """User labels, plus where the image came from unless the user said otherwise."""
    labels = dict(request.labels)
    if source.kind == "git":
        labels.setdefault(SOURCE_LABEL, clean_url(source.location))
    if source.revision:
        labels.setdefault(REVISION_LABEL, source.revision)
    return labels
