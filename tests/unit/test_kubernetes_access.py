"""What the runner may do (permissions, preflight) and which Job owns its Jobs (ownership).

A small fake stands in for the `kubernetes` client objects at our boundary: it answers the
calls the runner makes and records them.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from multiarch.errors import ConfigurationError
from multiarch.runners.kubernetes import client as kube_client
from multiarch.runners.kubernetes.options import KubernetesOptions
from multiarch.runners.kubernetes.ownership import (
    OwnPod,
    flow_run_owner,
    own_pod,
    owning_job,
)
from multiarch.runners.kubernetes.permissions import (
    REQUIRED,
    Permission,
    granted_by_rules,
    missing_permissions,
    review,
)


class FakeReviews:
    """SelfSubjectAccessReviews answered from a set of denied permissions."""

    def __init__(self, denied: set[Permission]) -> None:
        self.denied = denied
        self.asked: list[Any] = []

    def create_self_subject_access_review(self, body: Any, **_: Any) -> Any:
        self.asked.append(body)
        attrs = body.spec.resource_attributes
        asked = Permission(attrs.verb, attrs.group, attrs.resource, attrs.subresource or "")
        return SimpleNamespace(status=SimpleNamespace(allowed=asked not in self.denied))


class FakeBatch:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []
        self.job_uid = "job-uid-from-get"

    def list_namespaced_job(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(("list", args, kwargs))
        return SimpleNamespace(items=[])

    def create_namespaced_job(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(("create", args, kwargs))
        raise AssertionError("no Job may be created")

    def read_namespaced_job(self, name: str, namespace: str, **kwargs: Any) -> Any:
        self.calls.append(("get", (name, namespace), kwargs))
        return SimpleNamespace(metadata=SimpleNamespace(uid=self.job_uid))


def fake_api(*, denied: set[Permission] = frozenset(), pod: dict | None = None,
             namespace: str = "multiarch") -> Any:
    core = SimpleNamespace(read_namespaced_pod=lambda name, ns, **_: pod)
    return SimpleNamespace(
        namespace=namespace, batch=FakeBatch(), core=core, authorization=FakeReviews(denied),
        api_client=SimpleNamespace(sanitize_for_serialization=lambda obj: obj),
    )


def test_required_names_each_verb_the_runner_uses_once():
    assert len(set(REQUIRED)) == len(REQUIRED)
    assert Permission("get", "", "pods", "log") in REQUIRED
    assert Permission("deletecollection", "batch", "jobs") in REQUIRED
    assert not any(p.subresource == "status" for p in REQUIRED)  # Job conditions come with get
    assert [str(p) for p in REQUIRED if p.resource == "events"] == ["list events", "watch events"]


def test_rules_expand_to_permissions():
    rules = [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list"]},
             {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get"]}]
    assert granted_by_rules(rules) == {
        Permission("get", "batch", "jobs"), Permission("list", "batch", "jobs"),
        Permission("get", "", "pods"), Permission("get", "", "pods", "log"),
    }


def test_a_review_asks_about_the_namespace_and_the_subresource():
    attrs = review(Permission("get", "", "pods", "log"), "builds").spec.resource_attributes
    assert (attrs.namespace, attrs.verb, attrs.group, attrs.resource, attrs.subresource) == (
        "builds", "get", "", "pods", "log")
    assert review(Permission("list", "batch", "jobs"), "b").spec.resource_attributes \
        .subresource is None


def test_every_permission_is_asked_and_the_missing_ones_returned():
    denied = {Permission("deletecollection", "batch", "jobs"), Permission("get", "", "pods", "log")}
    reviews = FakeReviews(denied)
    assert set(missing_permissions(reviews, "multiarch")) == denied
    assert len(reviews.asked) == len(REQUIRED)


def test_preflight_names_every_missing_permission_before_any_job(monkeypatch):
    denied = {Permission("watch", "", "events"), Permission("create", "batch", "jobs")}
    api = fake_api(denied=denied)
    monkeypatch.setattr(kube_client, "connect", lambda options: api)
    with pytest.raises(ConfigurationError) as caught:
        kube_client.preflight(KubernetesOptions())
    message = str(caught.value)
    assert "create batch/jobs" in message and "watch events" in message
    assert "lacks 2 permission(s) in namespace multiarch" in message
    assert "apply deployments/kubernetes" in message
    assert api.batch.calls == []  # not even the reachability check


def test_preflight_with_every_permission_checks_reachability(monkeypatch):
    api = fake_api()
    monkeypatch.setattr(kube_client, "connect", lambda options: api)
    notes = kube_client.preflight(KubernetesOptions())
    assert [call[0] for call in api.batch.calls] == ["list"]
    assert notes == ["kubernetes: namespace multiarch reachable, permissions granted"]


def _service_account(tmp_path: Path, namespace: str = "multiarch") -> Path:
    (tmp_path / "namespace").write_text(namespace + "\n")
    return tmp_path


def test_own_pod_needs_the_cluster_environment_and_the_service_account(tmp_path):
    account = _service_account(tmp_path)
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOSTNAME": "flow-abc-x7k2p"}
    assert own_pod(env, account) == OwnPod(name="flow-abc-x7k2p", namespace="multiarch")
    assert own_pod({**env, "POD_NAME": "named"}, account).name == "named"
    assert own_pod({"HOSTNAME": "laptop"}, account) is None
    assert own_pod(env, tmp_path / "missing") is None


def test_owning_job_prefers_the_owner_reference_then_the_label():
    by_ref = {"metadata": {"ownerReferences": [
        {"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "x"},
        {"apiVersion": "batch/v1", "kind": "Job", "name": "flow-abc", "uid": "u-1"}]}}
    assert owning_job(by_ref) == ("flow-abc", "u-1")
    assert owning_job({"metadata": {"labels": {"job-name": "flow-abc"}}}) == ("flow-abc", None)
    assert owning_job({"metadata": {"labels": {"app": "x"}}}) is None


def test_the_flow_run_job_becomes_the_owner(tmp_path):
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOSTNAME": "flow-abc-x7k2p"}
    pod = {"metadata": {"ownerReferences": [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "flow-abc", "uid": "u-1"}]}}
    assert flow_run_owner(fake_api(pod=pod), env=env,
                          service_account_dir=_service_account(tmp_path)) == {
        "apiVersion": "batch/v1", "kind": "Job", "name": "flow-abc", "uid": "u-1"}


def test_the_job_is_read_when_the_pod_has_only_the_label(tmp_path):
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOSTNAME": "flow-abc-x7k2p"}
    api = fake_api(pod={"metadata": {"labels": {"batch.kubernetes.io/job-name": "flow-abc"}}})
    owner = flow_run_owner(api, env=env, service_account_dir=_service_account(tmp_path))
    assert owner is not None and owner["uid"] == "job-uid-from-get"
    assert api.batch.calls[0][:2] == ("get", ("flow-abc", "multiarch"))


def test_no_owner_across_namespaces(tmp_path):
    """The garbage collector would take an owner from another namespace for gone and
    delete the build Jobs at once."""
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOSTNAME": "flow-abc-x7k2p"}
    pod = {"metadata": {"ownerReferences": [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "flow-abc", "uid": "u-1"}]}}
    account = _service_account(tmp_path, namespace="prefect")
    assert flow_run_owner(fake_api(pod=pod), env=env, service_account_dir=account) is None
    assert flow_run_owner(fake_api(pod=pod), env={}, service_account_dir=account) is None


def test_a_server_without_access_reviews_is_named(monkeypatch):
    class NoReviews:
        def create_self_subject_access_review(self, body: Any, **_: Any) -> Any:
            raise ApiException(status=404, reason="Not Found")

    api = fake_api()
    api.authorization = NoReviews()
    monkeypatch.setattr(kube_client, "connect", lambda options: api)
    with pytest.raises(ConfigurationError, match="SelfSubjectAccessReview"):
        kube_client.preflight(KubernetesOptions())
