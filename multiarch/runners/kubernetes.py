"""The Kubernetes runner: one Job per platform on a native node, watched, streamed, deleted.

This is the only module that imports the Kubernetes client.

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

import atexit
import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from multiarch.credentials import credential_lines
from multiarch.diagnostics import Diagnosis, Verdict, diagnose_pod
from multiarch.errors import (
    ConfigurationError,
    MultiarchError,
    PublishError,
    StepFailed,
    TransientError,
    TransientStepFailure,
)
from multiarch.failures import classify_output
from multiarch.jobs import SHARED_MOUNT, TERMINATION_LOG, platform_job, pod_paths, publish_job
from multiarch.kube_options import KubernetesOptions
from multiarch.plan import LAYOUT_REF
from multiarch.platforms import Platform
from multiarch.process import TAIL_LINES
from multiarch.publish import PublishSpec, publish_spec_step
from multiarch.request import BuildRequest
from multiarch.results import BuildResult, PlatformImage
from multiarch.source import PinnedSource, git_credentials_block

WATCH_CHUNK_S = 30  # longest single watch call; the loop re-checks deadlines between calls
LOG_RECONNECT_DELAY_S = 0.2
LOG_JOIN_TIMEOUT_S = 30
PUBLISH_TIMEOUT_S = 3600

Emit = Callable[[str], None]


@dataclass(frozen=True)
class KubeApi:
    api_client: client.ApiClient
    batch: client.BatchV1Api
    core: client.CoreV1Api
    namespace: str


@dataclass(frozen=True, kw_only=True)
class JobOutcome:
    job: str
    pod: str
    termination_message: str


def connect(options: KubernetesOptions) -> KubeApi:
    """Cluster access from a credentials block, a kubeconfig, or the pod's service account."""
    configuration = client.Configuration()
    try:
        if options.credentials_block:
            _load_credentials_block(options.credentials_block, configuration)
        elif options.kubeconfig:
            config.load_kube_config(config_file=options.kubeconfig, context=options.kube_context,
                                    client_configuration=configuration)
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)
            except config.ConfigException:
                config.load_kube_config(context=options.kube_context,
                                        client_configuration=configuration)
    except (config.ConfigException, OSError) as exc:
        raise ConfigurationError(
            f"cannot load Kubernetes access ({exc}): set runner.kubernetes.kubeconfig, "
            "runner.kubernetes.credentials_block, or run inside the cluster"
        ) from exc
    api_client = client.ApiClient(configuration)
    return KubeApi(api_client=api_client, batch=client.BatchV1Api(api_client),
                   core=client.CoreV1Api(api_client), namespace=options.namespace)


def _load_credentials_block(name: str, configuration: client.Configuration) -> None:
    from prefect_kubernetes.credentials import KubernetesCredentials

    credentials = KubernetesCredentials.load(name)
    cluster = credentials.cluster_config
    if cluster is None:
        config.load_incluster_config(client_configuration=configuration)
        return
    config.load_kube_config_from_dict(cluster.config, context=cluster.context_name,
                                      client_configuration=configuration)


def api_error(exc: Exception, *, what: str) -> MultiarchError:
    """Translate an API failure into our hierarchy, with the fix in the message."""
    if isinstance(exc, ApiException):
        if exc.status in (401, 403):
            return ConfigurationError(
                f"{what}: forbidden ({exc.status}): grant the service account the Role in "
                "deployments/kubernetes (jobs create/get/list/watch/delete, pods get/list/"
                "watch, pods/log get, events list/watch)"
            )
        if exc.status == 404:
            return ConfigurationError(f"{what}: not found: does the namespace exist?")
        if exc.status in (409, 422, 400):
            return ConfigurationError(f"{what}: rejected by the API server: {exc.reason}: "
                                      f"{(exc.body or '')[:300]}")
        return TransientError(f"{what}: API server answered {exc.status} {exc.reason}")
    return TransientError(f"{what}: cannot reach the API server: {exc}")


def preflight(options: KubernetesOptions) -> list[str]:
    """Before any build: the cluster answers and we may manage Jobs in the namespace."""
    api = connect(options)
    try:
        api.batch.list_namespaced_job(api.namespace, limit=1, _request_timeout=30)
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        raise api_error(exc, what=f"listing Jobs in namespace {api.namespace}") from exc
    return [f"kubernetes: namespace {api.namespace} reachable"]


# --- live Jobs, deleted on cancellation and at exit -------------------------------------

_live_jobs: dict[tuple[str, str], KubeApi] = {}
_live_lock = threading.Lock()


def delete_job(api: KubeApi, name: str) -> None:
    """Delete a Job and (Background propagation) its pods; a missing Job is fine."""
    with contextlib.suppress(ApiException, urllib3.exceptions.HTTPError):
        api.batch.delete_namespaced_job(name, api.namespace, propagation_policy="Background",
                                        _request_timeout=30)
    with _live_lock:
        _live_jobs.pop((api.namespace, name), None)


def delete_all_jobs() -> int:
    """Delete every Job this process created and has not yet deleted (cancellation, exit)."""
    with _live_lock:
        live = list(_live_jobs.items())
    for (_, name), api in live:
        delete_job(api, name)
    return len(live)


atexit.register(delete_all_jobs)


# --- one Job, watched to the end ---------------------------------------------------------

@dataclass
class PodView:
    """The latest pod object, shared between the watch loop and the log follower."""

    pod: dict[str, Any] | None = None
    finished: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def update(self, pod: dict[str, Any]) -> None:
        with self.lock:
            self.pod = pod

    def container_state(self, name: str) -> dict[str, Any]:
        with self.lock:
            status = (self.pod or {}).get("status") or {}
        for key in ("initContainerStatuses", "containerStatuses"):
            for entry in status.get(key) or []:
                if entry.get("name") == name:
                    return entry.get("state") or {}
        return {}


def run_job(api: KubeApi, manifest: Mapping[str, Any], *, label: str, timeout_s: int,
            unschedulable_grace_s: int, emit: Emit) -> JobOutcome:
    """Create the Job, follow its pod to the end, always delete it."""
    try:
        created = api.batch.create_namespaced_job(api.namespace, client.V1Job.from_dict(manifest),
                                                  _request_timeout=30)
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        raise api_error(exc, what=f"{label} creating Job") from exc
    name = created.metadata.name
    with _live_lock:
        _live_jobs[(api.namespace, name)] = api
    emit(f"{label} created Job {api.namespace}/{name}")
    try:
        return _follow_job(api, name, manifest, label=label, timeout_s=timeout_s,
                           grace_s=unschedulable_grace_s, emit=emit)
    finally:
        delete_job(api, name)
        emit(f"{label} deleted Job {api.namespace}/{name}")


def _follow_job(api: KubeApi, job: str, manifest: Mapping[str, Any], *, label: str,
                timeout_s: int, grace_s: int, emit: Emit) -> JobOutcome:
    deadline = time.monotonic() + timeout_s
    view = PodView()
    steps = _step_names(manifest)
    logs: LogFollower | None = None
    unschedulable_since: float | None = None
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StepFailed(f"{label} timed out after {timeout_s}s: raise runner.timeout_s"
                                 " or make the build faster", step="job", exit_code=None,
                                 tail=logs.tail() if logs else [])
            chunk = min(remaining, WATCH_CHUNK_S)
            if unschedulable_since is not None:
                chunk = min(chunk, max(0.5, unschedulable_since + grace_s - time.monotonic()))
            for event_type, pod in _watch_pods(api, job, timeout_s=chunk):
                if event_type == "DELETED" and not _terminal(pod):
                    _raise_if_deadline(api, job, label=label, timeout_s=timeout_s)
                    raise TransientError(f"{label} pod {_pod_name(pod)} was deleted before it "
                                         "finished (node drained?); retrying")
                view.update(pod)
                if logs is None:
                    logs = LogFollower(api, _pod_name(pod), steps, view, label=label, emit=emit)
                    logs.start()
                diagnosis = diagnose_pod(pod)
                if diagnosis.verdict == Verdict.SUCCEEDED:
                    logs.finish()
                    return JobOutcome(job=job, pod=_pod_name(pod),
                                      termination_message=_termination_message(pod, steps[-1]))
                if diagnosis.exit_code is not None and not _terminal(pod):
                    continue  # a step ended; wait for the pod's verdict (evicted? failed?)
                if diagnosis.verdict in (Verdict.PERMANENT, Verdict.TRANSIENT):
                    logs.finish()
                    _raise_if_deadline(api, job, label=label, timeout_s=timeout_s)
                    raise _failure(diagnosis, label=label, tail=logs.tail(diagnosis.step))
                if diagnosis.verdict == Verdict.UNSCHEDULABLE:
                    unschedulable_since = unschedulable_since or time.monotonic()
                else:
                    unschedulable_since = None
                if unschedulable_since is not None and \
                        time.monotonic() - unschedulable_since >= grace_s:
                    raise ConfigurationError(f"{label} {diagnosis.message}")
                if time.monotonic() >= deadline:
                    break
            if unschedulable_since is not None and \
                    time.monotonic() - unschedulable_since >= grace_s and view.pod is not None:
                raise ConfigurationError(f"{label} {diagnose_pod(view.pod).message}")
    finally:
        if logs is not None:
            logs.stop()


def _watch_pods(api: KubeApi, job: str, *, timeout_s: float
                ) -> Iterator[tuple[str, dict[str, Any]]]:
    """Pod events of one Job for at most `timeout_s` (the server ends the watch)."""
    stream = watch.Watch().stream(
        api.core.list_namespaced_pod, api.namespace, label_selector=f"job-name={job}",
        timeout_seconds=max(1, int(timeout_s)), _request_timeout=timeout_s + 15,
    )
    try:
        for event in stream:
            raw = event.get("raw_object")
            if isinstance(raw, dict) and raw.get("kind") != "Status":
                yield event["type"], raw
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        if isinstance(exc, ApiException) and exc.status in (401, 403, 404):
            raise api_error(exc, what=f"watching pods of Job {job}") from exc
        # a dropped or expired watch: the caller simply watches again


def _raise_if_deadline(api: KubeApi, job: str, *, label: str, timeout_s: int) -> None:
    """The Job controller kills pods at activeDeadlineSeconds; say so instead of blaming
    the step it interrupted (or retrying a deleted pod)."""
    try:
        status = api.api_client.sanitize_for_serialization(
            api.batch.read_namespaced_job_status(job, api.namespace, _request_timeout=30)
        ).get("status") or {}
    except (ApiException, urllib3.exceptions.HTTPError):
        return
    for condition in status.get("conditions") or []:
        if condition.get("reason") == "DeadlineExceeded" and condition.get("status") == "True":
            raise StepFailed(f"{label} timed out after {timeout_s}s (Job deadline): raise "
                             "runner.timeout_s or make the build faster", step="job",
                             exit_code=None, tail=[])


def _failure(diagnosis: Diagnosis, *, label: str, tail: list[str]) -> MultiarchError:
    last = next((line for line in reversed(tail) if line.strip()), "")
    message = f"{label} {diagnosis.message}" + (f": {last.strip()}" if last else "")
    step = diagnosis.step or "pod"
    # The pod's own verdict (evicted, image pull), else the failing tool's own error line:
    # a RUN step that printed "connection refused" and then failed is not retried.
    if diagnosis.verdict == Verdict.TRANSIENT or (
        diagnosis.exit_code not in (None, 0) and classify_output(tail).transient
    ):
        return TransientStepFailure(message, step=step, exit_code=diagnosis.exit_code, tail=tail)
    return StepFailed(message, step=step, exit_code=diagnosis.exit_code, tail=tail)


def _terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _pod_name(pod: Mapping[str, Any]) -> str:
    return (pod.get("metadata") or {}).get("name", "?")


def _step_names(manifest: Mapping[str, Any]) -> list[str]:
    spec = manifest["spec"]["template"]["spec"]
    return [c["name"] for c in [*spec.get("initContainers", []), *spec["containers"]]]


def _termination_message(pod: Mapping[str, Any], container: str) -> str:
    for entry in (pod.get("status") or {}).get("containerStatuses") or []:
        if entry.get("name") == container:
            return ((entry.get("state") or {}).get("terminated") or {}).get("message") or ""
    return ""


# --- logs ---------------------------------------------------------------------------------

class LogFollower(threading.Thread):
    """Streams each step's log in step order; resumes a dropped stream without repeats.

    The log of a container only grows, so after a drop we ask again from the start and
    skip the lines already passed on (the API's `sinceTime` is second-granular and would
    repeat or lose lines).
    """

    def __init__(self, api: KubeApi, pod: str, steps: list[str], view: PodView, *,
                 label: str, emit: Emit) -> None:
        super().__init__(name=f"logs-{pod}", daemon=True)
        self.api, self.pod, self.steps, self.view = api, pod, steps, view
        self.label, self.emit = label, emit
        self._tails: dict[str, deque[str]] = {s: deque(maxlen=TAIL_LINES) for s in steps}
        self._stop_now = threading.Event()

    def run(self) -> None:
        for step in self.steps:
            if not self._wait_started(step):
                return
            self.emit(f"{self.label} step {step} on {self.pod}")
            self._stream(step)

    def finish(self) -> None:
        """The pod is done: let the follower drain what is left, then wait for it."""
        self.view.finished.set()
        self.join(LOG_JOIN_TIMEOUT_S)

    def stop(self) -> None:
        self._stop_now.set()
        self.view.finished.set()

    def tail(self, step: str | None = None) -> list[str]:
        if step is not None and step in self._tails:
            return list(self._tails[step])
        return [line for s in self.steps for line in self._tails[s]]

    def _wait_started(self, step: str) -> bool:
        while not self._stop_now.is_set():
            state = self.view.container_state(step)
            if "running" in state or "terminated" in state:
                return True
            if self.view.finished.is_set():
                return False
            time.sleep(0.1)
        return False

    def _stream(self, step: str) -> None:
        passed = 0
        while not self._stop_now.is_set():
            done = "terminated" in self.view.container_state(step) or self.view.finished.is_set()
            try:
                for index, line in enumerate(self._lines(step, follow=not done)):
                    if index >= passed:
                        self._tails[step].append(line)
                        self.emit(f"{self.label} [{step}] {line}")
                        passed += 1
            except (ApiException, urllib3.exceptions.HTTPError, OSError):
                pass  # a dropped stream: ask again, skipping what was passed on
            if done:
                return
            time.sleep(LOG_RECONNECT_DELAY_S)

    def _lines(self, step: str, *, follow: bool) -> Iterator[str]:
        response = self.api.core.read_namespaced_pod_log(
            self.pod, self.api.namespace, container=step, follow=follow,
            _preload_content=False, _request_timeout=(30, 3600),
        )
        buffer = b""
        try:
            for chunk in response.stream(4096, decode_content=True):
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for raw in complete:
                    yield raw.decode("utf-8", errors="replace")
            if buffer:
                yield buffer.decode("utf-8", errors="replace")
        finally:
            response.release_conn()


# --- the runner's two jobs: build a platform, publish the index --------------------------

def build_platform_job(request: BuildRequest, source: PinnedSource, platform: Platform, *,
                       run_id: str, flow_run_id: str, emit: Emit) -> PlatformImage:
    options = request.runner.kubernetes
    if source.kind == "git" and not options.git_credentials_secret and \
            credential_lines(git_credentials_block(request)):
        emit(f"[{platform}] this run has git credentials, but they never go into a Job spec: "
             "the fetch pod gets them only from runner.kubernetes.git_credentials_secret")
    manifest = platform_job(request, source, platform, run_id=run_id, flow_run_id=flow_run_id)
    started = time.monotonic()
    outcome = run_job(connect(options), manifest, label=f"[{platform}]",
                      timeout_s=request.runner.timeout_s,
                      unschedulable_grace_s=options.unschedulable_grace_s, emit=emit)
    digest = outcome.termination_message.strip()
    if not digest.startswith("sha256:"):
        raise StepFailed(f"[{platform}] export did not report a digest (got {digest[:80]!r})",
                         step="export", exit_code=None, tail=[])
    return PlatformImage(platform=platform, digest=digest, size=0, emulated=False,
                         duration_s=time.monotonic() - started,
                         layout=pod_paths(run_id, platform).layout, layout_ref=LAYOUT_REF)


def publish_spec(request: BuildRequest, source: PinnedSource, images: list[PlatformImage], *,
                 run_id: str, annotations: Mapping[str, str] | None = None) -> PublishSpec:
    return PublishSpec(image=request.image, tags=request.all_tags,
                       insecure=request.insecure_registry, source=source, images=tuple(images),
                       index_dir=f"{SHARED_MOUNT}/{run_id}/index",
                       cleanup_dir=None if request.runner.keep_shared
                       else f"{SHARED_MOUNT}/{run_id}", annotations=dict(annotations or {}))


def publish_job_run(request: BuildRequest, source: PinnedSource, images: list[PlatformImage],
                    *, run_id: str, flow_run_id: str, emit: Emit,
                    annotations: Mapping[str, str] | None = None) -> BuildResult:
    """Publish inside the cluster, where the shared volume is; the result comes back as the
    container's termination message."""
    options = request.runner.kubernetes
    spec = publish_spec(request, source, images, run_id=run_id, annotations=annotations)
    step = publish_spec_step(spec, result_file=TERMINATION_LOG)
    manifest = publish_job(step, options=options, flow_run_id=flow_run_id,
                           image_name=request.image.name, timeout_s=PUBLISH_TIMEOUT_S,
                           selector={"kubernetes.io/os": "linux"})
    outcome = run_job(connect(options), manifest, label="[publish]", timeout_s=PUBLISH_TIMEOUT_S,
                      unschedulable_grace_s=options.unschedulable_grace_s, emit=emit)
    try:
        return BuildResult.model_validate(json.loads(outcome.termination_message))
    except ValueError as exc:
        raise PublishError("the publish pod finished without reporting its result") from exc
