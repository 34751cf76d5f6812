"""The Kubernetes runner: one Job per platform on a native node, watched, streamed, deleted.

Why not prefect-kubernetes' `KubernetesJob` for these Jobs: measured on 0.8.0, it polls
in a busy loop when a Job has neither active pods nor conditions (so its timeout never
fires), counts poll intervals instead of wall-clock time, refuses `generateName`, deletes
Jobs only on success, treats the `SuccessCriteriaMet` condition of Kubernetes 1.31+ as a
failure, and does not handle eviction. We keep its `KubernetesCredentials` block (cluster
access) and its worker (to run the flow itself in a cluster), and run the per-platform
Jobs here on the official client: a watch, not a poll; a wall-clock deadline; every
step's logs streamed; a pure `diagnose_pod` deciding retry or fail; the Job deleted on
success, failure, timeout and cancellation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from multiarch.attest import SupplyChainPlan
from multiarch.credentials import credential_lines
from multiarch.errors import PublishError, StepFailed
from multiarch.handoff.layouts import LAYOUT_REF
from multiarch.platforms import Platform
from multiarch.publish import PublishSpec, publish_spec_step
from multiarch.request import BuildRequest
from multiarch.results import BuildResult, PlatformImage
from multiarch.runners import RunContext
from multiarch.runners.kubernetes.attempt import (
    ATTEMPT,
    allow_new_jobs,
    attempt_run_id,
    delete_attempt_jobs,
    install_sigterm_cleanup,
    start_attempt,
)
from multiarch.runners.kubernetes.client import connect, delete_scope_jobs, preflight
from multiarch.runners.kubernetes.logs import Emit
from multiarch.runners.kubernetes.manifests import (
    SHARED_MOUNT,
    SIGNING_KEY_FILE,
    TERMINATION_LOG,
    platform_job,
    pod_paths,
    publish_job,
)
from multiarch.runners.kubernetes.watch import run_job
from multiarch.source import PinnedSource, git_credentials_block

PUBLISH_TIMEOUT_S = 3600


def build_platform_job(request: BuildRequest, source: PinnedSource, platform: Platform, *,
                       run_id: str, flow_run_id: str, emit: Emit) -> PlatformImage:
    options = request.runner.kubernetes
    if source.kind == "git" and not options.git_credentials_secret and \
            credential_lines(git_credentials_block(request)):
        emit(f"[{platform}] this run has git credentials, but they never go into a Job spec: "
             "the fetch pod gets them only from runner.kubernetes.git_credentials_secret")
    api = connect(options)
    owner = start_attempt(api, flow_run_id, emit=emit)
    manifest = platform_job(request, source, platform, run_id=run_id, flow_run_id=flow_run_id,
                            attempt=ATTEMPT, owner=owner)
    started = time.monotonic()
    started_at = datetime.now(UTC)
    outcome = run_job(api, manifest, label=f"[{platform}]",
                      timeout_s=request.runner.timeout_s,
                      unschedulable_grace_s=options.unschedulable_grace_s, emit=emit)
    digest = outcome.termination_message.strip()
    if not digest.startswith("sha256:"):
        raise StepFailed(f"[{platform}] export did not report a digest (got {digest[:80]!r})",
                         step="export", exit_code=None, tail=[])
    shared = request.handoff == "shared"
    return PlatformImage(platform=platform, digest=digest, size=0, emulated=outcome.emulated,
                         duration_s=time.monotonic() - started, handoff=request.handoff,
                         layout=pod_paths(run_id, platform, handoff="shared").layout
                         if shared else None, layout_ref=LAYOUT_REF,
                         reference=None if shared else request.image.with_digest(digest),
                         # pods are pinned to nodes of the platform's architecture
                         node_architecture=platform.architecture, node=outcome.node or None,
                         started_at=started_at, finished_at=datetime.now(UTC))


def publish_spec(request: BuildRequest, source: PinnedSource, images: list[PlatformImage], *,
                 run_id: str, annotations: Mapping[str, str] | None = None,
                 supply: SupplyChainPlan | None = None) -> PublishSpec:
    """The publish pod's instructions; the signing key only by the path of its mounted
    Secret (runner.kubernetes.signing_key_secret), never its value."""
    if supply is not None and request.runner.kubernetes.signing_key_secret:
        supply = supply.model_copy(update={"sign_key_file": SIGNING_KEY_FILE,
                                           "sign_key_block": None})
    return PublishSpec(image=request.image, tags=request.all_tags,
                       insecure=request.insecure_registry, source=source, images=tuple(images),
                       index_dir=f"{SHARED_MOUNT}/{run_id}/index",
                       cleanup_dir=None if request.runner.keep_shared
                       or request.handoff != "shared" else f"{SHARED_MOUNT}/{run_id}",
                       annotations=dict(annotations or {}), supply=supply,
                       index_format=request.index_format)


def publish_job_run(request: BuildRequest, source: PinnedSource, images: list[PlatformImage],
                    *, run_id: str, flow_run_id: str, emit: Emit,
                    annotations: Mapping[str, str] | None = None,
                    supply: SupplyChainPlan | None = None) -> BuildResult:
    """Publish inside the cluster, where the shared volume and the registry Secret are; the
    result comes back as the container's termination message."""
    options = request.runner.kubernetes
    spec = publish_spec(request, source, images, run_id=run_id, annotations=annotations,
                        supply=supply)
    step = publish_spec_step(spec, result_file=TERMINATION_LOG)
    api = connect(options)
    owner = start_attempt(api, flow_run_id, emit=emit)
    manifest = publish_job(step, options=options, flow_run_id=flow_run_id,
                           image_name=request.image.name, timeout_s=PUBLISH_TIMEOUT_S,
                           selector={"kubernetes.io/os": "linux"},
                           shared=request.handoff == "shared", attempt=ATTEMPT, owner=owner)
    outcome = run_job(api, manifest, label="[publish]", timeout_s=PUBLISH_TIMEOUT_S,
                      unschedulable_grace_s=options.unschedulable_grace_s, emit=emit)
    try:
        return BuildResult.model_validate(json.loads(outcome.termination_message))
    except ValueError as exc:
        raise PublishError("the publish pod finished without reporting its result") from exc



class KubernetesRunner:
    """Builds in Jobs on native nodes; publishes in a Job too (volume and Secret are there)."""

    def preflight(self, request: BuildRequest) -> list[str]:
        install_sigterm_cleanup()  # here, on the main thread: builds run in worker threads
        allow_new_jobs()
        return preflight(request.runner.kubernetes)

    def build(self, request: BuildRequest, source: PinnedSource, platform: Platform,
              run: RunContext) -> PlatformImage:
        return build_platform_job(request, source, platform, run_id=attempt_run_id(run.run_id),
                                  flow_run_id=run.flow_run_id, emit=run.log.info)

    def publish(self, request: BuildRequest, source: PinnedSource,
                images: list[PlatformImage], run: RunContext,
                annotations: Mapping[str, str] | None = None,
                supply: SupplyChainPlan | None = None) -> BuildResult:
        return publish_job_run(request, source, images, run_id=attempt_run_id(run.run_id),
                               flow_run_id=run.flow_run_id, emit=run.log.info,
                               annotations=annotations, supply=supply)

    def cleanup(self, request: BuildRequest, run: RunContext) -> None:
        """Nothing on this machine: the handoff lives on the cluster's volume (the publish
        Job removes it) or in the registry, and each Job is deleted when it ends."""

    def stop(self) -> None:
        delete_attempt_jobs()

    def stop_build(self) -> None:
        delete_scope_jobs()


RUNNER = KubernetesRunner()
