"""Issue 10's faults 1-7, each met on the real control plane (tests/cluster) as a user
would meet it: the message they read, how long it took, and that nothing is left.

The runner is driven directly (`build_platform_job`, as the flow's build task calls it)
unless the fault needs the whole run (a process stopped with SIGTERM). Objects a test
needs besides the bundle (another ServiceAccount, a namespace at Pod Security "baseline",
a Node, a scale-up event) are made with the admin identity, as an administrator or the
cluster autoscaler would; the runner itself keeps the identity it is given.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from prefect.client.orchestration import get_client

from multiarch.errors import ConfigurationError, TransientError
from multiarch.orchestrate import build_and_publish
from multiarch.platforms import Platform
from multiarch.process import Step
from multiarch.request import BuildRequest
from multiarch.results import PlatformImage
from multiarch.runners.kubernetes import runner as kube_runner
from multiarch.runners.kubernetes.follower import NODE_REFRESH_S
from multiarch.runners.kubernetes.manifests import (
    LABEL_ATTEMPT,
    LABEL_FLOW_RUN,
    MINIMAL_CAPABILITIES,
    STORE_STEPS,
    UNPRIVILEGED,
    label_value,
    platform_job,
    publish_job,
)
from multiarch.runners.kubernetes.options import KubernetesOptions
from multiarch.runners.kubernetes.permissions import REQUIRED
from multiarch.runners.kubernetes.scheduling import NO_NODE_NOTICE_S
from multiarch.source import PinnedSource
from tests.cluster.controlplane import NODE_GRACE_S, NodeSpec
from tests.cluster.handle import Cluster, Obj
from tests.integration import git_repos
from tests.integration.conftest import Playground, tag_digest
from tests.integration.git_repos import GitDaemon, git
from tests.integration.test_kubernetes_runner import CONTAINERFILE, kube_runner_options

pytestmark = pytest.mark.integration

SLOW = """\
ARG BASE
FROM ${BASE}
RUN sleep 120
"""
# No RUN: an architecture without QEMU here (s390x) builds it natively.
NO_RUN = """\
FROM scratch
COPY hello.txt /hello.txt
"""
ROLE = "multiarch-builder"
BASELINE = "multiarch-baseline"  # a namespace at Pod Security "baseline"


@pytest.fixture
def cluster(kube_builder: Cluster) -> Cluster:
    return kube_builder


def make_repo(daemon: GitDaemon, root: Path, containerfile: str) -> PinnedSource:
    location = git_repos.make_repo(daemon, root, containerfile, {"hello.txt": "hello\n"})
    return PinnedSource(kind="git", location=location, ref="HEAD",
                        revision=git("rev-parse", "HEAD", cwd=root))


def make_request(cluster: Cluster, playground: Playground, source: PinnedSource, *,
                 platform: str = "linux/amd64", name: str = "kube-faults",
                 handoff: str = "shared", runner: dict[str, Any] | None = None,
                 **kube: Any) -> BuildRequest:
    options = kube_runner_options(cluster, **kube)
    options.update(runner or {})
    return BuildRequest(image=f"{playground.address}/tests/{name}:1", platforms=(platform,),
                        context=source.location, build_args={"BASE": playground.base},
                        insecure_registry=True, handoff=handoff, runner=options)


def build(request: BuildRequest, source: PinnedSource, *, lines: list[str] | None = None,
          flow_run_id: str = "", run_id: str = "faults") -> PlatformImage:
    emit = lines.append if lines is not None else (lambda _line: None)
    return kube_runner.build_platform_job(
        request, source, request.platforms[0], run_id=run_id,
        flow_run_id=flow_run_id or f"faults-{uuid.uuid4().hex[:8]}", emit=emit)


class _Discard:
    """A run's log nobody reads (the test reads the exception)."""

    def info(self, msg: str, /) -> None:
        pass


def timed_failure(run: Callable[[], object], expected: type[BaseException]
                  ) -> tuple[BaseException, float]:
    started = time.monotonic()
    with pytest.raises(expected) as failure:
        run()
    return failure.value, time.monotonic() - started


def wait_for_build_step(cluster: Cluster, process: subprocess.Popen[str]) -> None:
    """Until a build pod's `build` container runs; when it never does, fail with what the
    run printed and the pods' states (the run may have ended, or its pod never started)."""
    try:
        cluster.wait_for(running_step(cluster, "build"), timeout=120, what="the build step")
    except TimeoutError:
        if process.poll() is None:
            process.kill()
        output, _ = process.communicate(timeout=30)
        pods = [(p["metadata"]["name"], (p.get("status") or {}).get("phase"))
                for p in cluster.pods()]
        pytest.fail(f"no build step ran within 120 s; pods {pods}; the run printed:\n"
                    f"{output[-4000:]}")


def running_step(cluster: Cluster, step: str, *, namespace: str | None = None
                 ) -> Callable[[], Obj | None]:
    """A condition: some pod has container `step` running (the pod, or None)."""

    def found() -> Obj | None:
        pods = cluster.pods() if namespace is None else cluster._dicts(
            cluster.core.list_namespaced_pod(namespace).items)
        for pod in pods:
            status = pod.get("status") or {}
            for entry in [*(status.get("initContainerStatuses") or []),
                          *(status.get("containerStatuses") or [])]:
                if entry["name"] == step and "running" in (entry.get("state") or {}):
                    return pod
        return None

    return found


def in_background(run: Callable[[], object]) -> tuple[threading.Thread, list[Any]]:
    """Run `run` in a thread; the list receives its result or the exception it raised."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(run())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


# --- accounts and namespaces, as an administrator makes them ---------------------------------


@pytest.fixture
def account(cluster: Cluster) -> Iterator[Callable[..., Path]]:
    """Make a ServiceAccount (with, optionally, a copy of the bundle's Role minus some
    verbs) and return a token kubeconfig of it; everything is deleted after the test."""
    rbac = client.RbacAuthorizationV1Api(cluster.api_client)
    made: list[str] = []

    def make(name: str, tmp: Path, *, role: bool = False, without: dict[str, str] | None = None,
             bundle_role: bool = False) -> Path:
        cluster.core.create_namespaced_service_account(
            cluster.namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name)))
        made.append(name)
        role_name = ROLE if bundle_role else name
        if role:
            rules = rbac.read_namespaced_role(ROLE, cluster.namespace).rules
            for rule in rules:
                for resource, verb in (without or {}).items():
                    if resource in rule.resources:
                        rule.verbs = [v for v in rule.verbs if v != verb]
            rbac.create_namespaced_role(cluster.namespace, client.V1Role(
                metadata=client.V1ObjectMeta(name=name), rules=rules))
        if role or bundle_role:
            rbac.create_namespaced_role_binding(cluster.namespace, client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name=name),
                role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role",
                                          name=role_name),
                subjects=[client.RbacV1Subject(kind="ServiceAccount", name=name,
                                               namespace=cluster.namespace)]))
        return cluster.write_runner_kubeconfig(tmp / f"{name}.kubeconfig", account=name)

    yield make
    for name in made:
        for delete in (rbac.delete_namespaced_role_binding, rbac.delete_namespaced_role,
                       cluster.core.delete_namespaced_service_account):
            try:
                delete(name, cluster.namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise


@pytest.fixture(scope="module")
def baseline_namespace(kube_session: Cluster) -> Iterator[str]:
    """A namespace enforcing Pod Security "baseline", where the bundle's Role is bound to
    the bundle's ServiceAccount too (an administrator's copy): the runner may work there,
    but the namespace refuses privileged pods."""
    cluster = kube_session
    rbac = client.RbacAuthorizationV1Api(cluster.api_client)
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=BASELINE, labels={"pod-security.kubernetes.io/enforce": "baseline"})))
    role = rbac.read_namespaced_role(ROLE, cluster.namespace)
    rbac.create_namespaced_role(BASELINE, client.V1Role(
        metadata=client.V1ObjectMeta(name=ROLE), rules=role.rules))
    binding = rbac.read_namespaced_role_binding(ROLE, cluster.namespace)
    rbac.create_namespaced_role_binding(BASELINE, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name=ROLE), role_ref=binding.role_ref,
        subjects=binding.subjects))
    yield BASELINE
    cluster.core.delete_namespace(BASELINE)


# --- fix 2: the preflight names every missing permission ---------------------------------


def test_an_account_without_the_role_is_refused_before_any_job(git_daemon, cluster, playground,
                                                               account, tmp_path):
    """The whole run (no Prefect) stops at its preflight with one message naming each
    permission, and no Job is ever created."""
    source = make_repo(git_daemon, tmp_path / "repo", CONTAINERFILE)
    kubeconfig = account("faults-no-role", tmp_path)
    request = make_request(cluster, playground, source, kubeconfig=str(kubeconfig))
    failure, elapsed = timed_failure(
        lambda: build_and_publish(request, log=_Discard()), ConfigurationError)
    message = str(failure)
    assert f"lacks {len(REQUIRED)} permission(s) in namespace {cluster.namespace}" in message
    assert all(str(permission) in message for permission in REQUIRED), message
    assert "apply deployments/kubernetes" in message
    assert elapsed < 30
    assert cluster.created_jobs() == []


def test_a_role_without_one_verb_is_named_exactly(cluster, account, tmp_path):
    kubeconfig = account("faults-no-watch", tmp_path, role=True, without={"jobs": "watch"})
    options = KubernetesOptions(kubeconfig=str(kubeconfig), namespace=cluster.namespace)
    failure, _ = timed_failure(lambda: kube_runner.preflight(options), ConfigurationError)
    assert f"lacks 1 permission(s) in namespace {cluster.namespace}: watch batch/jobs:" \
        in str(failure)
    assert cluster.created_jobs() == []


# --- fix 3: failures without a running pod are seen within seconds -----------------------


def test_pod_security_refusal_fails_within_seconds(git_daemon, cluster, playground,
                                                   baseline_namespace, tmp_path):
    """The Job controller cannot create the pod (FailedCreate on the Job); the runner says
    why at once instead of waiting for runner.timeout_s. Registry handoff: the namespace
    has no shared claim."""
    source = make_repo(git_daemon, tmp_path / "repo", CONTAINERFILE)
    request = make_request(cluster, playground, source, namespace=baseline_namespace,
                           handoff="registry")
    failure, elapsed = timed_failure(lambda: build(request, source), ConfigurationError)
    message = str(failure)
    assert "violates PodSecurity" in message
    assert "pod-security.kubernetes.io/enforce=privileged" in message  # the fix
    # only the store steps ask for privileges
    assert 'containers "build", "export" must not set securityContext.privileged=true' \
        in message
    assert elapsed < 15, elapsed
    assert cluster.batch.list_namespaced_job(baseline_namespace).items == []


@pytest.mark.parametrize("option", ["registry_secret", "git_credentials_secret"])
def test_a_missing_secret_fails_within_seconds_naming_it(git_daemon, cluster, playground, tmp_path,
                                                         option):
    """The kubelet cannot mount the Secret (FailedMount on the pod); before, the build
    waited the whole timeout."""
    source = make_repo(git_daemon, tmp_path / "repo", CONTAINERFILE)
    request = make_request(cluster, playground, source, handoff="registry",
                           **{option: "faults-no-such-secret"})
    failure, elapsed = timed_failure(lambda: build(request, source), ConfigurationError)
    message = str(failure)
    assert 'secret "faults-no-such-secret" not found' in message
    assert "create the missing Secret" in message
    assert elapsed < 15, elapsed


# --- fix 1: a previous attempt's Jobs, and a stopped process's -----------------------------


def test_a_new_attempt_deletes_the_previous_attempts_job_first(git_daemon, cluster, playground,
                                                               tmp_path):
    """A rescheduled flow run keeps its flow-run id: its new attempt deletes what the old
    one left before it creates its own first Job."""
    source = make_repo(git_daemon, tmp_path / "repo", CONTAINERFILE)
    request = make_request(cluster, playground, source)
    flow_run_id = f"faults-{uuid.uuid4().hex[:8]}"
    leftover = platform_job(request, source, Platform.parse("linux/amd64"), run_id="old",
                            flow_run_id=flow_run_id, attempt="previous0")
    old = cluster.batch.create_namespaced_job(cluster.namespace, leftover).metadata.name
    seen_when_created: list[list[str]] = []

    def emit(line: str) -> None:
        if " created Job " in line:
            seen_when_created.append([j["metadata"]["name"] for j in cluster.jobs()])
        lines.append(line)

    lines: list[str] = []
    image = kube_runner.build_platform_job(request, source, Platform.parse("linux/amd64"),
                                           run_id="new", flow_run_id=flow_run_id, emit=emit)
    assert image.digest.startswith("sha256:")
    assert old not in seen_when_created[0], "the previous attempt's Job was still there"
    assert any(f"deleted any Jobs a previous attempt of flow run {flow_run_id}" in line
               for line in lines)
    ours = [j for j in cluster.created_jobs() if j["metadata"]["labels"][LABEL_FLOW_RUN]
            == label_value(flow_run_id)]
    assert {j["metadata"]["labels"][LABEL_ATTEMPT] for j in ours} >= {"previous0"}
    assert len({j["metadata"]["labels"][LABEL_ATTEMPT] for j in ours}) == 2


STOPPED_RUN = """\
import json, sys
{call}
"""
PLAIN_CALL = """\
from multiarch.orchestrate import build_and_publish
from multiarch.request import BuildRequest

class Log:
    def info(self, msg):
        print(msg, flush=True)

build_and_publish(BuildRequest.model_validate(json.loads(sys.argv[1])), log=Log())
"""
PREFECT_CALL = """\
from flows.build import build_multiarch_image

build_multiarch_image(**json.loads(sys.argv[1]))
"""


@pytest.mark.parametrize("kind", ["plain", "prefect"])
def test_sigterm_to_the_run_leaves_no_job(git_daemon, cluster, playground, prefect_server,
                                          tmp_path, kind):
    """The flow-run pod is evicted or its Job deleted: the process gets SIGTERM while a
    build pod runs. It deletes its Jobs and exits; nothing keeps building."""
    source = make_repo(git_daemon, tmp_path / "repo", SLOW)
    request = make_request(cluster, playground, source, name=f"kube-sigterm-{kind}")
    parameters = request.model_dump(mode="json", exclude_defaults=True)
    call = PLAIN_CALL if kind == "plain" else PREFECT_CALL
    env = {**os.environ, "PREFECT_API_URL": prefect_server,
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen([sys.executable, "-c", STOPPED_RUN.format(call=call),
                                json.dumps(parameters)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_build_step(cluster, process)
        process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        output, _ = process.communicate(timeout=60)
        exited = time.monotonic() - stopped
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # measured: exit 0.0 s (plain) and 1.9 s (Prefect), all gone 0.1 s and 1.9 s after
    assert exited < 20, (exited, output)
    cluster.wait_for(lambda: cluster.jobs() == [] and cluster.pods() == [], timeout=10,
                     what="the run's Job and pod to be deleted")
    if kind == "plain":  # our handler deleted the Jobs, then SIGTERM did what it does
        assert process.returncode == -signal.SIGTERM, output
    else:  # Prefect's handler: the run ends Cancelled, its builds stopped
        assert process.returncode != 0, output
        assert "cancelled (SIGTERM): every build was stopped and nothing was published" \
            in output
    assert tag_digest(str(request.image)) is None


def test_sigterm_to_a_rescheduling_flow_run_leaves_no_job(git_daemon, cluster, playground,
                                                          prefect_server, tmp_path):
    """What the Prefect kubernetes worker runs with `backoff_limit: 0`: `prefect flow-run
    execute` with PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR=reschedule. SIGTERM reaches it
    (the flow-run pod evicted): the supervisor reschedules the run for a next attempt, the
    run stays Scheduled (not Cancelled by the flow), and this attempt's build Job is gone,
    not left running into the next one."""
    from prefect.deployments import run_deployment

    from flows.build import build_multiarch_image

    source = make_repo(git_daemon, tmp_path / "repo", SLOW)
    request = make_request(cluster, playground, source, name="kube-sigterm-reschedule")
    deployment = build_multiarch_image.to_deployment(name="faults-sigterm").apply()
    flow_run = run_deployment(deployment, timeout=0,
                              parameters=request.model_dump(mode="json", exclude_defaults=True))
    env = {**os.environ, "PREFECT_API_URL": prefect_server,
           "PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR": "reschedule"}
    process = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "flow-run",
                                "execute", str(flow_run.id)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_build_step(cluster, process)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Flow run successfully rescheduled." in output, output
    cluster.wait_for(lambda: cluster.jobs() == [] and cluster.pods() == [], timeout=10,
                     what="the attempt's Job and pod to be deleted")
    with get_client(sync_client=True) as prefect:
        state = prefect.read_flow_run(flow_run.id).state
    assert state is not None and state.is_scheduled(), state


# --- fix 7: no node of the architecture, or one on its way ---------------------------------


def test_no_node_of_the_architecture_fails_well_inside_the_grace(git_daemon, cluster, playground,
                                                                 tmp_path):
    """unschedulable_grace_s (60 s by default) is for nodes that are full; no s390x node at
    all and no scale-up fails sooner."""
    source = make_repo(git_daemon, tmp_path / "repo", NO_RUN)
    request = make_request(cluster, playground, source, platform="linux/s390x",
                           unschedulable_grace_s=60)
    failure, elapsed = timed_failure(lambda: build(request, source), ConfigurationError)
    assert "[linux/s390x] no schedulable node" in str(failure)
    assert "add a node labelled kubernetes.io/arch=s390x" in str(failure)
    assert elapsed < 30, elapsed


def scale_up_event(pod: Obj) -> client.CoreV1Event:
    """What cluster-autoscaler posts on a pod it adds a node for."""
    now = datetime.now(UTC)
    meta = pod["metadata"]
    return client.CoreV1Event(
        metadata=client.V1ObjectMeta(name=f"{meta['name']}.scaleup{uuid.uuid4().hex[:6]}"),
        involved_object=client.V1ObjectReference(kind="Pod", name=meta["name"],
                                                 namespace=meta["namespace"], uid=meta["uid"],
                                                 api_version="v1"),
        reason="TriggeredScaleUp", type="Normal", count=1, first_timestamp=now,
        last_timestamp=now, source=client.V1EventSource(component="cluster-autoscaler"),
        message="pod triggered scale-up: [{s390x-pool 0->1 (max: 3)}]")


def test_a_scale_up_under_way_is_waited_for(git_daemon, cluster, playground, tmp_path):
    grace = 6
    source = make_repo(git_daemon, tmp_path / "repo", NO_RUN)
    request = make_request(cluster, playground, source, platform="linux/s390x",
                           name="kube-scaleup", unschedulable_grace_s=grace)
    lines: list[str] = []
    worker, outcome = in_background(lambda: build(request, source, lines=lines))
    try:
        pod = cluster.wait_for(lambda: next(iter(cluster.pods()), None), timeout=30,
                               what="the s390x pod")
        cluster.core.create_namespaced_event(cluster.namespace, scale_up_event(pod))
        time.sleep(max(grace, NO_NODE_NOTICE_S) + 4)  # past the grace and the no-node notice
        assert worker.is_alive(), outcome
        cluster.add_node(NodeSpec("node-s390x", "s390x", emulated=True))
        worker.join(180)
        assert not worker.is_alive()
    finally:
        if any(n.name == "node-s390x" for n in cluster.state.nodes):
            worker.join(180)
            cluster.remove_node("node-s390x")
    image = outcome[0]
    assert isinstance(image, PlatformImage), image
    assert image.digest.startswith("sha256:")
    assert any("[linux/s390x] waiting for a new node: pod triggered scale-up" in line
               for line in lines)


# --- fix 6: privileges only where buildah and skopeo open the store ------------------------


def containers_of(pod_spec: Obj) -> list[Obj]:
    return [*(pod_spec.get("initContainers") or []), *pod_spec["containers"]]


def admitted_in(cluster: Cluster, namespace: str, containers: list[Obj],
                volumes: list[Obj]) -> str | None:
    """Would the namespace's Pod Security admission take a pod of these containers? None,
    or the API server's refusal (asked with a server-side dry run: nothing is created)."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "faults-dry-run"},
           "spec": {"restartPolicy": "Never", "containers": containers, "volumes": volumes}}
    try:
        cluster.core.create_namespaced_pod(namespace, pod, dry_run="All")
    except ApiException as exc:
        return json.loads(exc.body)["message"]
    return None


def test_only_build_and_export_hold_privileges_and_minimal_builds(git_daemon, cluster, playground,
                                                                  baseline_namespace,
                                                                  tmp_path):
    """`security: minimal` builds on the cluster; in the Job it sent, only the store steps
    ask for more than nothing. A namespace at Pod Security "baseline" would admit every
    other container as it is (the fetch, the push, the publish with the registry Secret)
    and refuses exactly the store steps."""
    source = make_repo(git_daemon, tmp_path / "repo", CONTAINERFILE)
    request = make_request(cluster, playground, source, name="kube-minimal",
                           handoff="registry", security="minimal")
    assert build(request, source).digest.startswith("sha256:")
    [job] = cluster.created_jobs()
    pod = job["spec"]["template"]["spec"]
    contexts = {c["name"]: c["securityContext"] for c in containers_of(pod)}
    assert set(contexts) == {"prepare", "fetch", "build", "export", "push"}
    for name, context in contexts.items():
        if name in STORE_STEPS:
            assert context["privileged"] is False
            assert context["capabilities"] == {"add": list(MINIMAL_CAPABILITIES)}
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        else:
            assert context == UNPRIVILEGED, name
    assert not any("hostPath" in v for v in pod["volumes"])  # no /dev/fuse

    others = [c for c in containers_of(pod) if c["name"] not in STORE_STEPS]
    assert admitted_in(cluster, baseline_namespace, others, pod["volumes"]) is None
    refusal = admitted_in(cluster, baseline_namespace, containers_of(pod), pod["volumes"])
    assert refusal is not None and "violates PodSecurity" in refusal
    assert 'containers "build", "export"' in refusal, refusal
    options = request.runner.kubernetes.model_copy(update={"registry_secret": "registry"})
    publish = publish_job(Step(name="publish", argv=("multiarch", "publish")),
                          options=options, flow_run_id="faults", image_name="kube-minimal",
                          timeout_s=60)["spec"]["template"]["spec"]
    assert admitted_in(cluster, baseline_namespace, publish["containers"],
                       publish["volumes"]) is None


# --- fix 5: a node that stops reporting -------------------------------------------------------


def cordon(cluster: Cluster, node: str, *, on: bool) -> None:
    cluster.core.patch_node(node, {"spec": {"unschedulable": on}})


def created_job(lines: list[str]) -> str:
    return next(line.rsplit("/", 1)[1] for line in lines if " created Job " in line)


def scheduled_on(cluster: Cluster, job: str) -> list[str]:
    """The nodes the scheduler put the Job's pods on, from its Scheduled events."""
    return [e["message"].rsplit(" to ", 1)[1] for e in cluster.events()
            if e["reason"] == "Scheduled" and e["involvedObject"]["name"].startswith(f"{job}-")]


def re_register(cluster: Cluster, spec: NodeSpec) -> None:
    """A lost session node comes back as a new agent: its pods of before are finalized."""
    cluster.remove_node(spec.name)
    cluster.add_node(spec)


@pytest.mark.parametrize("reads_nodes", [False, True], ids=["pod-only", "reads-nodes"])
def test_a_lost_node_fails_over_to_another_node_of_the_architecture(git_daemon, cluster, playground,
                                                                   account, tmp_path,
                                                                   reads_nodes):
    """node-arm64 powers off while it builds; the retry runs on node-arm64-b.

    pod-only: an identity that may not read Nodes (the bundle's optional ClusterRole is not
    bound to it) learns of the loss from the pod alone: the node lifecycle controller marks
    the node NotReady after its grace, and the taint manager deletes the pod after our
    toleration (5 s here, 60 s by default, not Kubernetes' 300 s): that bounds the wait.
    reads-nodes: the bundle's identity sees the node NotReady and fails over at once,
    without waiting for the toleration (the default 60 s here)."""
    toleration = 60 if reads_nodes else 5
    kubeconfig = cluster.kubeconfig if reads_nodes else \
        account("faults-no-nodes", tmp_path, bundle_role=True)
    source = make_repo(git_daemon, tmp_path / "repo", SLOW.replace("120", "15"))
    request = make_request(cluster, playground, source, platform="linux/arm64",
                           name="kube-nodelost", kubeconfig=str(kubeconfig),
                           node_lost_toleration_s=toleration)
    lost, spare = NodeSpec("node-arm64", "arm64", emulated=True), \
        NodeSpec("node-arm64-b", "arm64", emulated=True)
    cluster.add_node(spare)
    flow_run_id = f"faults-{uuid.uuid4().hex[:8]}"
    try:
        cordon(cluster, spare.name, on=True)  # the first attempt lands on node-arm64
        worker, outcome = in_background(
            lambda: build(request, source, flow_run_id=flow_run_id, run_id="try1"))
        pod = cluster.wait_for(running_step(cluster, "build"), timeout=120,
                               what="the arm64 build step")
        assert pod["spec"]["nodeName"] == lost.name
        tolerations = {t["key"]: t.get("tolerationSeconds") for t in pod["spec"]["tolerations"]}
        assert tolerations["node.kubernetes.io/unreachable"] == toleration
        cordon(cluster, spare.name, on=False)
        cluster.lose_node(lost.name)
        since_lost = time.monotonic()
        worker.join(120)
        noticed = time.monotonic() - since_lost
        assert not worker.is_alive()
        [failure] = outcome
        assert isinstance(failure, TransientError), failure
        assert f"node {lost.name} not ready" in str(failure)
        assert "retrying on another node of this architecture" in str(failure)
        if reads_nodes:
            assert "(Ready Unknown (NodeStatusUnknown))" in str(failure)
            # the node's grace, then the node read again (every NODE_REFRESH_S at most)
            assert noticed < NODE_GRACE_S + NODE_REFRESH_S + 8 < toleration, noticed
        else:
            assert "(pod marked DeletionByTaintManager)" in str(failure)  # the toleration
            assert noticed < NODE_GRACE_S + toleration + 15, noticed

        lines: list[str] = []
        image = build(request, source, lines=lines, flow_run_id=flow_run_id, run_id="try2")
        assert image.digest.startswith("sha256:")
        assert scheduled_on(cluster, created_job(lines)) == [spare.name]
    finally:
        re_register(cluster, lost)
        cluster.wait_for(lambda: cluster.pods() == [], timeout=60, what="pods to be gone")
        cluster.remove_node(spare.name)
