"""The mission on a real cluster: prefect.yaml's build-kubernetes run by a Kubernetes worker.

`make serve`'s server (the `stack` fixture) with the multiarch-k8s pool and its base job
template (deployments/kubernetes/work-pool-template.json), the test cluster of tests/cluster
with deployments/kubernetes applied (`kube_session`), and `prefect worker start --type
kubernetes --pool multiarch-k8s` (`kubernetes_worker`). `prefect deployment run
build-multiarch-image/build-kubernetes --watch` then goes all the way: the worker creates
the flow-run Job, a node agent runs its pod, the flow in it (in-cluster access as the
ServiceAccount multiarch-builder) creates one build Job per platform, the scheduler places
them by nodeSelector, and the publish Job pushes the index to the test registry.

The deployment's own parameters are kept (runner: kind kubernetes, namespace multiarch,
the builder image, the shared claim, the registry Secret); only what must point at this
machine is given per run: the image in the test registry, a git:// repository (served
by `git daemon` on 127.0.0.1), the base image and insecure_registry.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from multiarch.runners.kubernetes.manifests import LABEL_COMPONENT, LABEL_PLATFORM
from tests.e2e.conftest import RUN_TIMEOUT_S, KubernetesWorker, Stack, run_deployment
from tests.integration.conftest import skopeo_raw, tag_digest
from tests.integration.git_repos import GitDaemon, git, make_repo

# The Kubernetes path is the worker's and the cluster's, not the database's: SQLite's
# stack alone (test_deployments.py runs the server on both databases).
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize("stack", ["sqlite"], indirect=True, scope="module"),
]

CONTAINERFILE = """\
ARG BASE
FROM ${BASE}
RUN uname -m > /etc/build-arch
"""
# Long enough to delete the flow-run Job while both builds run.
SLOW_CONTAINERFILE = """\
ARG BASE
FROM ${BASE}
RUN sleep 300
"""
FLOW_RUN_LABEL = "prefect.io/flow-run-id"
RUNNER_ACCOUNT = "system:serviceaccount:multiarch:multiarch-builder"
NODE_OF = {"linux-amd64": "node-amd64", "linux-arm64": "node-arm64"}
ARCH_OF = {"linux-amd64": "amd64", "linux-arm64": "arm64"}
WALL_TIME_BOUND_S = 600
GC_BOUND_S = 30
CANCEL_BOUND_S = 60


def run_build_kubernetes(stack: Stack, cluster: Any, playground: Any, *, image: str,
                         context: str, watch: bool) -> tuple[str, Any]:
    """`prefect deployment run build-multiarch-image/build-kubernetes` with only what must
    point at this machine: the image in the test registry, the repository, the base image,
    insecure_registry, and the builder image of this checkout in the session registry (the
    flow-run pod's job variable `image`, and `runner.kubernetes.builder_image` in the
    deployment's own `runner`, which is otherwise kept as deployed)."""
    runner = copy.deepcopy(stack.deployment("build-kubernetes")["parameters"]["runner"])
    runner["kubernetes"]["builder_image"] = cluster.builder_image
    params = {"image": image, "context": context, "git_ref": "main",
              "build_args": {"BASE": playground.base}, "insecure_registry": True,
              "runner": runner}
    return run_deployment(stack, "build-kubernetes", params, watch=watch,
                          job_variables={"image": cluster.builder_image})


class PodRecorder:
    """Every pod of the namespace as last seen while the run went on.

    The runner deletes its Jobs, and with them their pods, as soon as each is done, so
    where a build ran can only be read while it runs."""

    def __init__(self, cluster: Any, *, interval_s: float = 0.25) -> None:
        self.cluster, self.interval_s = cluster, interval_s
        self.seen: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> PodRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _poll(self) -> None:
        while not self._stop.is_set():
            for pod in self.cluster.pods():
                self.seen[pod["metadata"]["name"]] = pod
            self._stop.wait(self.interval_s)

    def with_label(self, key: str, value: str | None = None) -> list[dict[str, Any]]:
        return [p for p in self.seen.values()
                if key in (p["metadata"].get("labels") or {})
                and value in (None, p["metadata"]["labels"][key])]


def job_creations(cluster: Any) -> list[dict[str, Any]]:
    """Who created which Job (the audit log's user, with the pod a bound token belongs
    to), since the test started."""
    log = Path(cluster.state.state_dir) / "audit.log"
    found = []
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        stamp = datetime.fromisoformat(entry["requestReceivedTimestamp"].replace("Z", "+00:00"))
        if (entry.get("verb") == "create" and entry.get("stage") == "ResponseComplete"
                and (entry.get("objectRef") or {}).get("resource") == "jobs"
                and entry.get("requestObject") and stamp.timestamp() >= cluster.test_started):
            found.append(entry)
    return found


def labels(obj: dict[str, Any]) -> dict[str, str]:
    return obj["metadata"].get("labels") or {}


def flow_run_jobs(cluster: Any, flow_run_id: str) -> list[dict[str, Any]]:
    return [j for j in cluster.jobs() if labels(j).get(FLOW_RUN_LABEL) == flow_run_id]


def running_builds(cluster: Any) -> list[dict[str, Any]]:
    """Build pods whose build step (an init container) has started."""
    return [p for p in cluster.pods()
            if labels(p).get(LABEL_COMPONENT) == "build"
            and any("running" in (s.get("state") or {})
                    for s in p["status"].get("initContainerStatuses") or [])]


def start_slow_run(git_daemon: GitDaemon, stack: Stack, worker: KubernetesWorker,
                   cluster: Any, playground: Any, *, image: str,
                   repo: Path) -> tuple[str, dict[str, Any]]:
    """Run build-kubernetes on a slow Containerfile committed to `repo`; return once both
    builds run, with the flow run's id and its (one) flow-run Job."""
    context = make_repo(git_daemon, repo, SLOW_CONTAINERFILE)
    flow_run_id, done = run_build_kubernetes(stack, cluster, playground, image=image,
                                             context=context, watch=False)
    wait_for_both_builds(stack, worker, cluster, flow_run_id, done)
    [flow_job] = flow_run_jobs(cluster, flow_run_id)
    return flow_run_id, flow_job


def wait_for_both_builds(stack: Stack, worker: KubernetesWorker, cluster: Any,
                         flow_run_id: str, done: Any) -> None:
    try:
        cluster.wait_for(lambda: len(running_builds(cluster)) == 2, timeout=300,
                         what="both build pods to run")
    except TimeoutError:
        pytest.fail(f"builds never ran: {stack.flow_run(flow_run_id)['state']}\n"
                    f"{diagnostics(stack, worker, done)}")


def delete_flow_run_job(cluster: Any, name: str) -> None:
    """`kubectl delete job` (background propagation): its pod goes with it."""
    cluster.batch.delete_namespaced_job(name, cluster.namespace,
                                        propagation_policy="Background")


def assert_from_the_pool_template(job: dict[str, Any], stack: Stack, image: str) -> None:
    """The flow-run Job is the pool's base job template with its defaults and the run's
    job variables (the builder image)."""
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "multiarch-builder"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    [volume] = pod["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == "multiarch-shared"
    [container] = pod["containers"]
    assert (container["image"], container["imagePullPolicy"]) == (image, "IfNotPresent")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PREFECT_API_URL"] == stack.api_url


def diagnostics(stack: Stack, worker: KubernetesWorker, done: Any = None) -> str:
    out = f"{done.stdout[-3000:]}\n{done.stderr[-2000:]}\n" if done is not None else ""
    return out + worker.log() + "\n" + stack.logs()


@pytest.fixture
def cluster(kube_builder: Any) -> Iterator[Any]:
    """The session's cluster; the flow-run Jobs the worker's template keeps are deleted
    at the end (the fixture then checks that nothing else is left)."""
    yield kube_builder
    for job in kube_builder.jobs():
        if FLOW_RUN_LABEL in labels(job):
            delete_flow_run_job(kube_builder, job["metadata"]["name"])
    kube_builder.wait_for(lambda: not kube_builder.jobs(), timeout=30, what="Jobs to go")


def test_build_kubernetes_deployment_runs_through_the_kubernetes_worker(
    stack: Stack, kubernetes_worker: KubernetesWorker, cluster: Any, playground: Any,
    git_daemon: GitDaemon, tmp_path: Path,
) -> None:
    context = make_repo(git_daemon, tmp_path / "repo", CONTAINERFILE)
    image = f"{playground.address}/e2e/kube-hello:latest"
    started = time.monotonic()
    with PodRecorder(cluster) as pods:
        flow_run_id, done = run_build_kubernetes(stack, cluster, playground, image=image,
                                                 context=context, watch=True)
    wall_s = time.monotonic() - started
    run = stack.flow_run(flow_run_id)
    assert run["state"]["type"] == "COMPLETED", (
        f"{run['state']['message']}\n{diagnostics(stack, kubernetes_worker, done)}")
    print(f"\ne2e wall time (deployment run --watch to COMPLETED): {wall_s:.1f} s")
    assert wall_s < WALL_TIME_BOUND_S

    # The index in the test registry: one image per architecture.
    index = json.loads(skopeo_raw(image))
    assert [m["platform"] for m in index["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
    ]
    assert tag_digest(image) is not None

    # The worker created the flow-run Job (admin kubeconfig); the flow in its pod created
    # the build and publish Jobs with that pod's own bound ServiceAccount token.
    creations = job_creations(cluster)
    by_worker = [e for e in creations
                 if labels(e["requestObject"]).get(FLOW_RUN_LABEL) == flow_run_id]
    by_flow = [e for e in creations if LABEL_COMPONENT in labels(e["requestObject"])]
    assert len(by_worker) == 1 and len(by_flow) == 3, [e["user"] for e in creations]
    assert by_worker[0]["user"]["username"] == "kubernetes-admin"
    assert_from_the_pool_template(by_worker[0]["requestObject"], stack, cluster.builder_image)
    [flow_job] = flow_run_jobs(cluster, flow_run_id)  # kept by the template's TTL
    flow_job_name = flow_job["metadata"]["name"]
    [flow_pod] = pods.with_label("job-name", flow_job_name)
    assert flow_pod["spec"]["serviceAccountName"] == "multiarch-builder"
    print(f"flow-run pod ran on {flow_pod['spec']['nodeName']}")
    for entry in by_flow:
        assert entry["user"]["username"] == RUNNER_ACCOUNT
        assert entry["user"]["extra"]["authentication.kubernetes.io/pod-name"] == [
            flow_pod["metadata"]["name"]]

    # One build Job per platform, pinned by nodeSelector, owned by the flow-run Job, and
    # placed by the scheduler on the node of that architecture.
    builds = [e["requestObject"] for e in by_flow
              if labels(e["requestObject"])[LABEL_COMPONENT] == "build"]
    assert sorted(labels(j)[LABEL_PLATFORM] for j in builds) == ["linux-amd64", "linux-arm64"]
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": flow_job_name,
             "uid": flow_job["metadata"]["uid"]}
    for job in [e["requestObject"] for e in by_flow]:
        assert job["metadata"]["ownerReferences"] == [owner]
    for job in builds:
        platform = labels(job)[LABEL_PLATFORM]
        selector = job["spec"]["template"]["spec"]["nodeSelector"]
        assert selector["kubernetes.io/arch"] == ARCH_OF[platform]
        placed = {p["spec"].get("nodeName") for p in pods.with_label(LABEL_PLATFORM, platform)
                  if labels(p).get(LABEL_COMPONENT) == "build"}
        assert placed == {NODE_OF[platform]}, f"{platform} ran on {placed}"

    # Left behind: only the flow-run Job and its Succeeded pod, kept by the template's
    # ttlSecondsAfterFinished (a day) for `kubectl logs`; the runner deleted its own Jobs.
    # (Jobs go at once; their pods a moment later, once the node has stopped them.)
    assert [j["metadata"]["name"] for j in cluster.jobs()] == [flow_job_name]
    assert flow_job["spec"]["ttlSecondsAfterFinished"] == 86400
    def only_one_pod() -> list[dict[str, Any]]:
        found = cluster.pods()
        return found if len(found) == 1 else []

    [left] = cluster.wait_for(only_one_pod, timeout=30, what="the build and publish pods to go")
    assert left["metadata"]["name"] == flow_pod["metadata"]["name"]
    assert left["status"]["phase"] == "Succeeded"


def test_deleting_the_flow_run_job_garbage_collects_the_build_jobs(
    stack: Stack, kubernetes_worker: KubernetesWorker, cluster: Any, playground: Any,
    git_daemon: GitDaemon, tmp_path: Path,
) -> None:
    """The flow-run pod is killed outright (SIGKILL: no handler, no atexit can delete
    anything), as a node failure or an OOM kill would; then its Job is deleted, as the
    worker's cancel, its TTL or an operator does. Only the ownerReferences remain to
    clean up, and the garbage collector must remove the running builds and their pods."""
    image = f"{playground.address}/e2e/kube-orphans:latest"
    flow_run_id, flow_job = start_slow_run(git_daemon, stack, kubernetes_worker, cluster,
                                           playground, image=image, repo=tmp_path / "repo")
    flow_job_name = flow_job["metadata"]["name"]
    [flow_pod] = [p for p in cluster.pods() if labels(p).get("job-name") == flow_job_name]
    cluster.oom_kill(flow_pod["metadata"]["name"])
    cluster.wait_for(lambda: all(p["status"].get("phase") == "Failed" for p in cluster.pods()
                                 if labels(p).get("job-name") == flow_job_name),
                     timeout=30, what="the flow-run pod to fail")
    time.sleep(2)
    ours = [j for j in cluster.jobs() if LABEL_COMPONENT in labels(j)]
    assert len(ours) == 2, "the builds should outlive the killed flow-run pod until its Job goes"

    deleted = time.monotonic()
    delete_flow_run_job(cluster, flow_job_name)
    cluster.wait_for(lambda: not cluster.jobs() and not cluster.pods(), timeout=GC_BOUND_S,
                     what="the garbage collector to remove the build Jobs and their pods")
    gc_s = time.monotonic() - deleted
    print(f"\nbuild Jobs and pods gone {gc_s:.1f} s after the flow-run Job was deleted")
    assert tag_digest(image) is None
    state = stack.wait_for([flow_run_id], timeout_s=RUN_TIMEOUT_S)[0]["state"]["type"]
    assert state in {"CRASHED", "FAILED"}, state


def test_cancelling_the_flow_run_removes_its_builds(
    stack: Stack, kubernetes_worker: KubernetesWorker, cluster: Any, playground: Any,
    git_daemon: GitDaemon, tmp_path: Path,
) -> None:
    """`prefect flow-run cancel` while both builds run. Prefect 3.9 cancels in the flow-run
    pod itself (the engine sees the CANCELLING state; the worker deletes nothing): the
    flow's on_cancellation hook deletes the build Jobs, the pod exits, and its Job is
    kept, finished, by the template's TTL. The run ends CANCELLED, not rescheduled."""
    image = f"{playground.address}/e2e/kube-cancelled:latest"
    flow_run_id, flow_job = start_slow_run(git_daemon, stack, kubernetes_worker, cluster,
                                           playground, image=image, repo=tmp_path / "repo")

    cancelled = time.monotonic()
    answer = stack.prefect("flow-run", "cancel", flow_run_id)
    assert answer.returncode == 0, answer.stdout + answer.stderr

    def only_the_finished_flow_run_job() -> bool:
        jobs, pods = cluster.jobs(), cluster.pods()
        return ([j["metadata"]["name"] for j in jobs] == [flow_job["metadata"]["name"]]
                and not jobs[0]["status"].get("active")
                and all(p["status"].get("phase") in {"Succeeded", "Failed"} for p in pods)
                and all(labels(p).get("job-name") == flow_job["metadata"]["name"]
                        for p in pods))

    try:
        cluster.wait_for(only_the_finished_flow_run_job, timeout=CANCEL_BOUND_S,
                         what="the builds to go and the flow-run pod to finish")
    except TimeoutError:
        left = [(o.get("kind"), o["metadata"]["name"], labels(o), o["status"])
                for o in [*cluster.jobs(), *cluster.pods()]]
        pytest.fail(f"left after cancel: {left}\n{diagnostics(stack, kubernetes_worker)}")
    gone_s = time.monotonic() - cancelled
    print(f"\nbuilds gone, flow-run pod finished {gone_s:.1f} s after `prefect flow-run cancel`")
    [run] = stack.wait_for([flow_run_id], timeout_s=60)
    assert run["state"]["type"] == "CANCELLED", run["state"]
    time.sleep(5)  # the worker polls every 2 s: a rescheduled run would be picked up
    created = [e for e in job_creations(cluster)
               if labels(e["requestObject"]).get(FLOW_RUN_LABEL) == flow_run_id]
    assert len(created) == 1, "the cancelled run was started again"
    assert tag_digest(image) is None


def test_a_drained_flow_run_is_rescheduled_and_its_next_attempt_publishes(
    stack: Stack, kubernetes_worker: KubernetesWorker, cluster: Any, playground: Any,
    git_daemon: GitDaemon, tmp_path: Path,
) -> None:
    """`kubectl drain` evicts the flow-run pod while both builds run (Eviction API: the
    pod is deleted with its grace period, so the flow gets SIGTERM). The template's
    backoffLimit 0 makes prefect-kubernetes reschedule the run on SIGTERM
    (PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR=reschedule): this attempt's builds are
    deleted at once, the worker starts a second flow-run Job for the same flow run, and
    that attempt (its own run id and paths, fix 1) pins `main` again, builds and
    publishes. The test commits a quick Containerfile right after the eviction, so the
    second attempt does not wait for the first one's slow RUN step."""
    image = f"{playground.address}/e2e/kube-drained:latest"
    flow_run_id, flow_job = start_slow_run(git_daemon, stack, kubernetes_worker, cluster,
                                           playground, image=image, repo=tmp_path / "repo")
    [flow_pod] = [p for p in cluster.pods()
                  if labels(p).get("job-name") == flow_job["metadata"]["name"]]
    name = flow_pod["metadata"]["name"]
    first = {j["metadata"]["name"] for j in cluster.jobs() if LABEL_COMPONENT in labels(j)}
    assert len(first) == 2
    cluster.core.create_namespaced_pod_eviction(name, cluster.namespace, {
        "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": name, "namespace": cluster.namespace}})
    evicted = time.monotonic()
    repo = tmp_path / "repo"
    (repo / "Containerfile").write_text(CONTAINERFILE)
    git("commit", "--quiet", "-am", "quick", cwd=repo)
    cluster.wait_for(lambda: not first & {j["metadata"]["name"] for j in cluster.jobs()}
                     and not [p for p in cluster.pods() if labels(p).get("job-name") in first],
                     timeout=GC_BOUND_S, what="the first attempt's build Jobs and pods to go")
    print(f"\nbuild Jobs and pods gone {time.monotonic() - evicted:.1f} s after the eviction")

    assert tag_digest(image) is None, "the drained attempt published"
    [run] = stack.wait_for([flow_run_id], timeout_s=600)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    attempts = [e for e in job_creations(cluster)
                if labels(e["requestObject"]).get(FLOW_RUN_LABEL) == flow_run_id]
    assert len(attempts) == 2, "the drained run was not rescheduled"
    assert tag_digest(image) is not None

