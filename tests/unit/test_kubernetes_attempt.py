"""One attempt's Jobs: the sweep of earlier attempts by label, and the SIGTERM handler that
deletes this attempt's Jobs and then hands the signal on."""

from __future__ import annotations

import signal
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from multiarch.platforms import Platform
from multiarch.request import BuildRequest, RunnerOptions
from multiarch.runners.kubernetes import attempt, client, runner
from multiarch.runners.kubernetes.watch import JobOutcome
from multiarch.source import PinnedSource


class FakeBatch:
    def __init__(self) -> None:
        self.deleted_by_label: list[tuple[str, str, str]] = []
        self.deleted: list[str] = []

    def delete_collection_namespaced_job(self, namespace: str, *, label_selector: str,
                                         propagation_policy: str, **_: Any) -> None:
        self.deleted_by_label.append((namespace, label_selector, propagation_policy))

    def delete_namespaced_job(self, name: str, namespace: str, **_: Any) -> None:
        self.deleted.append(name)


def fake_api(namespace: str = "multiarch") -> Any:
    return SimpleNamespace(namespace=namespace, batch=FakeBatch())


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    monkeypatch.setattr(attempt, "ATTEMPT", "a1b2c3d4")
    monkeypatch.setattr(runner, "ATTEMPT", "a1b2c3d4")
    monkeypatch.setattr(attempt, "_swept", set())
    monkeypatch.setattr(attempt, "_used", {})
    monkeypatch.setattr(attempt, "_owners", {})
    monkeypatch.setattr(attempt, "_stopped", set())
    monkeypatch.setattr(client, "_live_jobs", {})


def test_paths_of_an_attempt_are_its_own():
    assert attempt.attempt_run_id("0f1e2d") == "0f1e2d-a1b2c3d4"


def test_the_sweep_selects_the_flow_runs_jobs_of_other_attempts_once():
    api, said = fake_api(), []
    for _ in range(2):
        attempt.sweep_previous_attempts(api, "9b2f-77aa", emit=said.append)
    assert api.batch.deleted_by_label == [
        ("multiarch",
         "multiarch.dev/flow-run-id=9b2f-77aa,multiarch.dev/attempt!=a1b2c3d4", "Background")]
    assert len(said) == 1


def test_runs_outside_a_flow_run_sweep_nothing():
    api = fake_api()
    attempt.sweep_previous_attempts(api, "", emit=print)
    assert api.batch.deleted_by_label == []


def test_stopping_deletes_recorded_jobs_and_this_attempts_by_label(monkeypatch):
    api = fake_api()
    monkeypatch.setattr(attempt, "flow_run_owner", lambda api: None)
    assert attempt.start_attempt(api, "9b2f", emit=lambda _: None) is None
    client.track_job(api, "hello-linux-arm64-x1")
    attempt.delete_attempt_jobs()
    assert api.batch.deleted == ["hello-linux-arm64-x1"]
    assert api.batch.deleted_by_label[-1] == (
        "multiarch", "multiarch.dev/attempt=a1b2c3d4", "Background")


def test_the_owner_is_looked_up_once_per_namespace(monkeypatch):
    looked: list[str] = []
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": "flow", "uid": "u"}
    monkeypatch.setattr(attempt, "flow_run_owner", lambda api: looked.append(api.namespace)
                        or owner)
    api = fake_api()
    assert attempt.start_attempt(api, "f", emit=lambda _: None) == owner
    assert attempt.start_attempt(api, "f", emit=lambda _: None) == owner
    assert looked == ["multiarch"]


def test_sigterm_deletes_then_chains_to_the_previous_handler(monkeypatch):
    order: list[Any] = []
    monkeypatch.setattr(attempt, "delete_attempt_jobs", lambda: order.append("deleted"))
    handler = attempt.on_sigterm(lambda signum, frame: order.append(("previous", signum)))
    handler(signal.SIGTERM, None)
    assert order == ["deleted", ("previous", signal.SIGTERM)]


def test_sigterm_after_an_ignoring_handler_only_deletes(monkeypatch):
    order: list[str] = []
    monkeypatch.setattr(attempt, "delete_attempt_jobs", lambda: order.append("deleted"))
    attempt.on_sigterm(signal.SIG_IGN)(signal.SIGTERM, None)
    assert order == ["deleted"]


def test_sigterm_with_the_default_action_still_terminates(monkeypatch):
    raised: list[int] = []
    monkeypatch.setattr(attempt, "delete_attempt_jobs", lambda: None)
    monkeypatch.setattr(signal, "raise_signal", raised.append)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        attempt.on_sigterm(signal.SIG_DFL)(signal.SIGTERM, None)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert raised == [signal.SIGTERM]


def test_a_stopped_flow_run_starts_no_new_job_until_the_next_run(monkeypatch):
    """A build task retried after SIGTERM deleted its Job must not create another."""
    api = fake_api()
    monkeypatch.setattr(attempt, "flow_run_owner", lambda api: None)
    attempt.start_attempt(api, "9b2f", emit=lambda _: None)
    attempt.delete_attempt_jobs()
    with pytest.raises(attempt.AttemptStopped, match="flow run 9b2f was stopped"):
        attempt.start_attempt(api, "9b2f", emit=lambda _: None)
    attempt.start_attempt(api, "other-flow-run", emit=lambda _: None)
    attempt.allow_new_jobs()  # the next run's preflight (a flow retry)
    attempt.start_attempt(api, "9b2f", emit=lambda _: None)


def test_the_handler_is_installed_once_over_the_current_one(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(attempt, "delete_attempt_jobs", lambda: calls.append("deleted"))
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append("prefect"))
    try:
        assert attempt.install_sigterm_cleanup()
        installed = signal.getsignal(signal.SIGTERM)
        assert attempt.install_sigterm_cleanup()
        assert signal.getsignal(signal.SIGTERM) is installed
        installed(signal.SIGTERM, None)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert calls == ["deleted", "prefect"]


def test_prefects_own_handler_is_left_in_place():
    """Prefect 3.9 acknowledges a reschedule only while its bridge is the SIGTERM handler
    (else its supervisor SIGKILLs the engine); its TerminationSignal reaches stop_all."""
    from prefect.utilities.engine import _prefect_sigterm_handler

    previous = signal.signal(signal.SIGTERM, _prefect_sigterm_handler)
    try:
        assert attempt.is_prefect_handler(_prefect_sigterm_handler)
        assert not attempt.install_sigterm_cleanup()
        assert signal.getsignal(signal.SIGTERM) is _prefect_sigterm_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_worker_threads_install_nothing():
    answers: list[bool] = []
    thread = threading.Thread(target=lambda: answers.append(attempt.install_sigterm_cleanup()))
    thread.start()
    thread.join()
    assert answers == [False]


def test_a_build_job_carries_the_attempt_its_owner_and_the_attempts_paths(monkeypatch):
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": "flow", "uid": "u"}
    started: list[dict] = []
    monkeypatch.setattr(runner, "connect", lambda options: fake_api())
    monkeypatch.setattr(attempt, "flow_run_owner", lambda api: owner)

    def run_job(api: Any, manifest: dict, **_: Any) -> JobOutcome:
        started.append(manifest)
        return JobOutcome(job="j", pod="p", termination_message="sha256:" + "a" * 64)

    monkeypatch.setattr(runner, "run_job", run_job)
    source = PinnedSource(kind="git", location="https://git.example.com/hello.git",
                          revision="0" * 40, ref="main")
    request = BuildRequest(image="registry.example.com/team/hello:1.0",
                           platforms=("linux/arm64",), context=source.location,
                           runner=RunnerOptions(kind="kubernetes"))
    built = runner.build_platform_job(request, source, Platform.parse("linux/arm64"),
                                      run_id=attempt.attempt_run_id("f00d"),
                                      flow_run_id="f0-0d", emit=lambda _: None)
    (manifest,) = started
    assert manifest["metadata"]["ownerReferences"] == [owner]
    assert manifest["metadata"]["labels"]["multiarch.dev/attempt"] == "a1b2c3d4"
    assert built.layout == "/shared/f00d-a1b2c3d4/linux-arm64"


def test_a_failed_build_deletes_its_own_jobs_only():
    """A fleet runs builds side by side in one process: one failing deletes its Jobs, the
    neighbour's keep running."""
    from multiarch.process import step_scope

    api = fake_api()
    with step_scope("app"):
        client.track_job(api, "app-linux-amd64-x1")
    with step_scope("tool"):
        client.track_job(api, "tool-linux-amd64-x1")
        assert client.delete_scope_jobs() == 1
    assert api.batch.deleted == ["tool-linux-amd64-x1"]
    assert client.delete_all_jobs() == 1
    assert api.batch.deleted == ["tool-linux-amd64-x1", "app-linux-amd64-x1"]
