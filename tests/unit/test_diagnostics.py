"""diagnose_pod on pod JSON shaped like the API server's: what each state means."""

from __future__ import annotations

from multiarch.runners.kubernetes.diagnostics import Verdict, diagnose_pod


def pod(
    phase="Pending",
    *,
    reason=None,
    message=None,
    conditions=(),
    init=(),
    main=(),
    selector=None,
    node=None,
):
    status = {
        "phase": phase,
        "conditions": list(conditions),
        "initContainerStatuses": [{"name": n, "state": s} for n, s in init],
        "containerStatuses": [{"name": n, "state": s} for n, s in main],
    }
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    spec = {
        "nodeSelector": selector or {"kubernetes.io/os": "linux", "kubernetes.io/arch": "arm64"}
    }
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": "hello-linux-arm64-x7k2p-abcde"}, "spec": spec, "status": status}


UNSCHEDULABLE = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "Unschedulable",
    "message": "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.",
}


def test_unschedulable_names_the_node_selector_and_the_fix():
    d = diagnose_pod(pod(conditions=[UNSCHEDULABLE]))
    assert d.verdict == Verdict.UNSCHEDULABLE
    assert "no schedulable node" in d.message
    assert "nodeSelector kubernetes.io/os=linux, kubernetes.io/arch=arm64" in d.message
    assert "add a node labelled kubernetes.io/arch=arm64" in d.message
    assert "drop the platform" in d.message


def test_eviction_and_node_loss_are_transient():
    evicted = diagnose_pod(
        pod(
            "Failed", reason="Evicted", node="pi-3", message="The node was low on resource: memory."
        )
    )
    assert evicted.verdict == Verdict.TRANSIENT
    assert "evicted on pi-3" in evicted.message and "low on resource" in evicted.message
    assert diagnose_pod(pod("Failed", reason="NodeLost")).verdict == Verdict.TRANSIENT


def test_image_pull_backoff_is_permanent_with_a_hint():
    d = diagnose_pod(
        pod(
            init=[
                (
                    "fetch",
                    {
                        "waiting": {
                            "reason": "ImagePullBackOff",
                            "message": 'Back-off pulling image "builder:9"',
                        }
                    },
                )
            ]
        )
    )
    assert d.verdict == Verdict.PERMANENT
    assert d.step == "fetch"
    assert 'Back-off pulling image "builder:9"' in d.message
    assert "builder_image" in d.message


def test_err_image_pull_alone_is_still_pending():
    d = diagnose_pod(pod(init=[("fetch", {"waiting": {"reason": "ErrImagePull"}})]))
    assert d.verdict == Verdict.PENDING


def test_oom_killed_is_permanent_and_points_at_memory_limits():
    d = diagnose_pod(
        pod(
            "Failed",
            init=[
                ("fetch", {"terminated": {"exitCode": 0, "reason": "Completed"}}),
                ("build", {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}),
            ],
            main=[("export", {"waiting": {"reason": "PodInitializing"}})],
        )
    )
    assert d.verdict == Verdict.PERMANENT
    assert (d.step, d.exit_code) == ("build", 137)
    assert "memory limit" in d.message


def test_failing_step_is_permanent_and_named():
    d = diagnose_pod(
        pod("Failed", init=[("build", {"terminated": {"exitCode": 7, "reason": "Error"}})])
    )
    assert d.verdict == Verdict.PERMANENT
    assert d.message == "step build exited with 7"


def test_missing_secret_is_a_configuration_failure():
    d = diagnose_pod(
        pod(
            main=[
                (
                    "publish",
                    {
                        "waiting": {
                            "reason": "CreateContainerConfigError",
                            "message": 'secret "reg" not found',
                        }
                    },
                )
            ]
        )
    )
    assert d.verdict == Verdict.PERMANENT
    assert 'secret "reg" not found' in d.message


def test_progress_states():
    assert diagnose_pod(pod()).verdict == Verdict.PENDING
    running = pod("Running", main=[("export", {"running": {"startedAt": "now"}})], node="n1")
    assert diagnose_pod(running).verdict == Verdict.RUNNING
    done = pod("Succeeded", main=[("export", {"terminated": {"exitCode": 0}})])
    assert diagnose_pod(done).verdict == Verdict.SUCCEEDED


def test_deadline_exceeded_is_permanent():
    d = diagnose_pod(pod("Failed", reason="DeadlineExceeded"))
    assert d.verdict == Verdict.PERMANENT
    assert "timeout_s" in d.message


def test_node_loss_reported_by_pod_gc_is_transient():
    gone = pod("Failed", init=[("build", {"terminated": {"exitCode": 137, "reason": "Error"}})],
               conditions=[{"type": "DisruptionTarget", "status": "True",
                            "reason": "DeletionByPodGC",
                            "message": "PodGC: node no longer exists"}], node="pi-2")
    d = diagnose_pod(gone)
    assert d.verdict == Verdict.TRANSIENT
    assert "DeletionByPodGC: PodGC: node no longer exists" in d.message
