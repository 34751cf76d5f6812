"""The Follower's verdicts from scripted watch changes: the watches and the API are faked
at our own boundary (JobWatch, KubeApi), the rules are the real ones."""

from __future__ import annotations

import copy
import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from multiarch.errors import ConfigurationError, StepFailed, TransientError
from multiarch.runners.kubernetes import follower as follower_module
from multiarch.runners.kubernetes.follower import Followed, Follower, JobOutcome
from multiarch.runners.kubernetes.reflector import Broken, Change
from tests.unit.test_kube_events import JOB, POD, condition, event, job
from tests.unit.test_kube_nodes import TAINT_MANAGER_CONDITIONS, node, running_pod


class FakeWatch:
    def __init__(self, *items: Change | Broken) -> None:
        self.items = list(items)
        self.events_of: list[str] = []

    def next(self, timeout_s: float) -> Change | Broken | None:
        if self.items:
            return self.items.pop(0)
        time.sleep(min(timeout_s, 0.02))
        return None

    def watch_events_of(self, name: str) -> None:
        self.events_of.append(name)


class FakeLogs:
    def __init__(self, api: Any, pod: str, steps: list[str], view: Any, **_: Any) -> None:
        self.pod, self.error = pod, None

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def finish(self) -> None: ...

    def tail(self, step: str | None = None) -> list[str]:
        return ["error: something went wrong"]


class Raw:
    def __init__(self, obj: Any) -> None:
        self.data = json.dumps(obj).encode()


def fake_api(*, node_answer: Any = None, job_answer: Any = None, pods: list[Any] | None = None):
    def answer(value: Any) -> Any:
        if isinstance(value, Exception):
            raise value
        return value

    core = SimpleNamespace(
        read_node=lambda name, **_: Raw(answer(node_answer or node())),
        list_namespaced_pod=lambda ns, **_: Raw({"items": pods or []}))
    batch = SimpleNamespace(read_namespaced_job=lambda name, ns, **_: answer(job_answer or job()))
    return SimpleNamespace(namespace="multiarch", core=core, batch=batch,
                           api_client=SimpleNamespace(sanitize_for_serialization=lambda o: o))


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    monkeypatch.setattr(follower_module, "LogFollower", FakeLogs)
    monkeypatch.setattr(follower_module, "TICK_S", 0.05)


def follow(watch: FakeWatch, api: Any = None, *, timeout_s: int = 5,
           grace_s: int = 60) -> JobOutcome:
    state = Followed(job=JOB, label="[linux/arm64]", steps=["fetch", "build", "export"])
    return Follower(api or fake_api(), watch, state, timeout_s=timeout_s, grace_s=grace_s,
                    emit=lambda line: None).follow()


def pod_change(pod: dict[str, Any], kind: str = "MODIFIED") -> Change:
    return Change("Pod", kind, pod)


def succeeded_pod() -> dict[str, Any]:
    pod = running_pod()
    pod["status"]["phase"] = "Succeeded"
    pod["status"]["containerStatuses"] = [{"name": "export", "state": {"terminated": {
        "exitCode": 0, "reason": "Completed", "message": "sha256:" + "a" * 64}}}]
    return pod


def test_a_pod_security_refusal_fails_within_a_second_without_any_pod():
    refused = event("FailedCreate", f'Error creating: pods "{POD}" is forbidden: violates '
                    'PodSecurity "baseline:latest": privileged')
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match="violates PodSecurity"):
        follow(FakeWatch(Change("Job", "ADDED", job()), Change("Event", "ADDED", refused)),
               timeout_s=3600)
    assert time.monotonic() - started < 1


def test_a_missing_secret_on_the_pod_fails_at_once():
    pending = running_pod()
    pending["status"] = {"phase": "Pending"}
    missing = event("FailedMount", 'MountVolume.SetUp failed for volume "git" : secret "git-creds"'
                    " not found", kind="Pod", name=POD, host="arm64-b")
    watch = FakeWatch(pod_change(pending, "ADDED"), Change("Event", "ADDED", missing))
    with pytest.raises(ConfigurationError, match='secret "git-creds" not found'):
        follow(watch)
    assert watch.events_of == [POD]  # the pod's events are followed once it exists


def test_the_job_deadline_is_read_from_the_watched_job():
    ending = job(condition("FailureTarget", "DeadlineExceeded", "Job was active longer than "
                           "specified deadline"))
    with pytest.raises(StepFailed, match=r"timed out after 5s \(Job deadline\)"):
        follow(FakeWatch(pod_change(running_pod()), Change("Job", "MODIFIED", ending)))


def test_a_failed_job_gives_the_pods_own_verdict_when_there_is_one():
    failed = running_pod()
    failed["status"]["phase"] = "Failed"
    failed["status"]["containerStatuses"] = [{"name": "build", "state": {"terminated": {
        "exitCode": 2, "reason": "Error"}}}]
    api = fake_api(pods=[failed])
    ended = job(condition("Failed", "BackoffLimitExceeded", "Job has reached the specified "
                          "backoff limit"))
    with pytest.raises(StepFailed, match="step build exited with 2") as raised:
        follow(FakeWatch(pod_change(running_pod()), Change("Job", "MODIFIED", ended)), api)
    assert raised.value.step == "build"


def test_success_on_an_emulated_node_says_so():
    api = fake_api(node_answer=node(emulated="true"))
    outcome = follow(FakeWatch(pod_change(running_pod()), pod_change(succeeded_pod())), api)
    assert outcome == JobOutcome(job=JOB, pod=POD, node="arm64-b", emulated=True,
                                 termination_message="sha256:" + "a" * 64)


def test_an_unreadable_node_is_native_and_not_an_error():
    api = fake_api(node_answer=ApiException(status=403, reason="Forbidden"))
    outcome = follow(FakeWatch(pod_change(running_pod()), pod_change(succeeded_pod())), api)
    assert outcome.emulated is False and outcome.node == "arm64-b"


def test_a_pod_the_taint_manager_deleted_is_retried_without_waiting():
    api = fake_api(node_answer=ApiException(status=403, reason="Forbidden"))
    lost = running_pod(deletion="2026-11-29T08:10:25Z", conditions=TAINT_MANAGER_CONDITIONS)
    with pytest.raises(TransientError, match="node arm64-b not ready"):
        follow(FakeWatch(pod_change(running_pod()), pod_change(lost)), api, timeout_s=3600)


def test_a_silent_node_is_noticed_from_its_ready_condition(monkeypatch):
    monkeypatch.setattr(follower_module, "NODE_REFRESH_S", 0.0)
    answers = iter([node(), node("Unknown", "NodeStatusUnknown")])
    api = fake_api()
    api.core.read_node = lambda name, **_: Raw(next(answers))
    not_ready = running_pod(conditions=[{"type": "Ready", "status": "False"}])
    with pytest.raises(TransientError, match="NodeStatusUnknown"):
        follow(FakeWatch(pod_change(running_pod()), pod_change(not_ready)), api)


def test_a_silent_node_is_noticed_while_the_pod_runs_its_init_containers(monkeypatch):
    """Build steps are init containers: the pod stays Pending (not Ready) nearly all along."""
    monkeypatch.setattr(follower_module, "NODE_REFRESH_S", 0.0)
    answers = iter([node(), node("Unknown", "NodeStatusUnknown")])
    api = fake_api()
    api.core.read_node = lambda name, **_: Raw(next(answers))
    initialising = running_pod(conditions=[{"type": "Ready", "status": "False",
                                            "reason": "ContainersNotReady"}])
    initialising["status"]["phase"] = "Pending"
    with pytest.raises(TransientError, match="NodeStatusUnknown"):
        follow(FakeWatch(pod_change(initialising)), api)


NO_ARM64 = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/2 nodes are available: 2 node(s) didn't match Pod's node "
                       "affinity/selector. preemption: 0/2 nodes are available: 2 Preemption "
                       "is not helpful for scheduling."}


def unschedulable() -> dict[str, Any]:
    pod = running_pod()
    del pod["spec"]["nodeName"]
    pod["status"] = {"phase": "Pending", "conditions": [NO_ARM64]}
    return pod


def test_no_node_of_the_architecture_fails_after_the_short_notice(monkeypatch):
    monkeypatch.setattr("multiarch.runners.kubernetes.scheduling.NO_NODE_NOTICE_S", 0.2)
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match=r"add a node labelled kubernetes\.io/arch=arm64"):
        follow(FakeWatch(pod_change(unschedulable(), "ADDED")), grace_s=600, timeout_s=3600)
    assert time.monotonic() - started < 2


def test_a_scale_up_under_way_is_waited_for_until_the_timeout(monkeypatch):
    monkeypatch.setattr("multiarch.runners.kubernetes.scheduling.NO_NODE_NOTICE_S", 0.2)
    scale_up = event("TriggeredScaleUp", "pod triggered scale-up: [{arm64 0->1 (max: 3)}]",
                     kind="Pod", name=POD, type_="Normal")
    with pytest.raises(StepFailed, match="timed out after 1s"):
        follow(FakeWatch(pod_change(unschedulable(), "ADDED"), Change("Event", "ADDED", scale_up)),
               grace_s=60, timeout_s=1)  # beyond the 0.2 s notice for "no such node"


def test_a_deleted_pod_with_jobs_get_forbidden_names_the_permission():
    api = fake_api(job_answer=ApiException(status=403, reason="Forbidden"))
    gone = copy.deepcopy(running_pod())
    with pytest.raises(ConfigurationError, match=r"needs jobs get.*forbidden \(403\)"):
        follow(FakeWatch(pod_change(running_pod()), pod_change(gone, "DELETED")), api)


def test_a_deleted_pod_is_otherwise_transient():
    with pytest.raises(TransientError, match="was deleted before it finished"):
        follow(FakeWatch(pod_change(running_pod()), pod_change(running_pod(), "DELETED")))


def test_a_broken_watch_fails_the_build_with_its_error():
    error = ConfigurationError("watching events of x (needs events list/watch): forbidden (403)")
    with pytest.raises(ConfigurationError, match="needs events list/watch"):
        follow(FakeWatch(Broken("Event", error)))
