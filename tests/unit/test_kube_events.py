"""Job conditions and Warning events, as the API server sends them, and what they mean."""

from __future__ import annotations

from multiarch.runners.kubernetes.diagnostics import Verdict, diagnose_pod
from multiarch.runners.kubernetes.events import (
    diagnose_event,
    diagnose_job,
    job_deadline_exceeded,
    scale_up_under_way,
)

JOB = "hello-linux-arm64-x7k2p"
POD = f"{JOB}-abcde"


def job(*conditions):
    return {"kind": "Job", "metadata": {"name": JOB, "namespace": "multiarch"},
            "status": {"conditions": list(conditions), "failed": 1}}


def condition(kind, reason, message=""):
    return {"type": kind, "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": "2026-11-29T08:00:00Z"}


def event(reason, message, *, kind="Job", name=JOB, type_="Warning", host=None):
    found = {"kind": "Event", "metadata": {"name": f"{name}.18a", "namespace": "multiarch"},
             "involvedObject": {"kind": kind, "name": name, "namespace": "multiarch"},
             "reason": reason, "message": message, "type": type_, "count": 1}
    if host:
        found["source"] = {"component": "kubelet", "host": host}
    return found


def test_a_running_or_complete_job_says_nothing():
    assert diagnose_job(job()) is None
    assert diagnose_job(job(condition("SuccessCriteriaMet", "CompletionsReached"),
                            condition("Complete", "CompletionsReached"))) is None


def test_deadline_is_seen_already_on_the_failure_target_condition():
    ending = job(condition("FailureTarget", "DeadlineExceeded",
                           "Job was active longer than specified deadline"))
    assert job_deadline_exceeded(ending)
    d = diagnose_job(ending)
    assert d is not None and d.verdict == Verdict.PERMANENT
    assert "deadline" in d.message and "raise runner.timeout_s" in d.message
    assert not job_deadline_exceeded(job(condition("Failed", "BackoffLimitExceeded")))


def test_backoff_limit_and_pod_failure_policy_name_the_reason():
    d = diagnose_job(job(condition("Failed", "BackoffLimitExceeded",
                                   "Job has reached the specified backoff limit")))
    assert d is not None and d.verdict == Verdict.PERMANENT
    assert "BackoffLimitExceeded: Job has reached the specified backoff limit" in d.message
    d = diagnose_job(job(condition("Failed", "PodFailurePolicy",
                                   "Container build for pod multiarch/x failed with exit code 42 "
                                   "matching FailJob rule at index 0")))
    assert d is not None and "exit code 42" in d.message


def test_pod_security_refusal_is_a_configuration_error_with_the_fix():
    d = diagnose_event(event("FailedCreate", f'Error creating: pods "{POD}" is forbidden: violates'
                             ' PodSecurity "baseline:latest": privileged (container "build" must '
                             "not set securityContext.privileged=true)"))
    assert d is not None and d.verdict == Verdict.PERMANENT
    assert "job " + JOB in d.message and "violates PodSecurity" in d.message
    assert "pod-security.kubernetes.io/enforce" in d.message


def test_quota_and_limit_range_refusals_are_permanent():
    quota = diagnose_event(event("FailedCreate", f'Error creating: pods "{POD}" is forbidden: '
                                 "exceeded quota: compute, requested: limits.memory=8Gi, used: "
                                 "limits.memory=0, limited: limits.memory=4Gi"))
    assert quota is not None and quota.verdict == Verdict.PERMANENT
    assert "ResourceQuota" in quota.message
    limits = diagnose_event(event("FailedCreate", f'Error creating: pods "{POD}" is forbidden: '
                                  "maximum memory usage per Container is 2Gi, but limit is 8Gi"))
    assert limits is not None and limits.verdict == Verdict.PERMANENT
    assert "LimitRange" in limits.message


def test_an_unknown_failed_create_is_only_reported():
    d = diagnose_event(event("FailedCreate", "Error creating: Internal error occurred: etcd "
                             "leader changed"))
    assert d is not None and d.verdict == Verdict.PENDING


def test_a_missing_secret_fails_at_once():
    d = diagnose_event(event("FailedMount", 'MountVolume.SetUp failed for volume "registry-auth"'
                             ' : secret "registry-auth" not found', kind="Pod", name=POD,
                             host="arm64-a"))
    assert d is not None and d.verdict == Verdict.PERMANENT
    assert f"pod {POD}" in d.message and 'secret "registry-auth" not found' in d.message
    assert "registry_secret" in d.message


def test_a_node_without_an_nfs_client_is_retried_elsewhere():
    d = diagnose_event(event("FailedMount", 'MountVolume.SetUp failed for volume "shared" : mount '
                             "failed: exit status 32 ... mount: wrong fs type, bad option, bad "
                             "superblock on 10.0.0.5:/export, missing codepage or helper "
                             "program, or other error (for several filesystems (e.g. nfs, cifs)"
                             " you might need a /sbin/mount.<type> helper program)",
                             kind="Pod", name=POD, host="arm64-a"))
    assert d is not None and d.verdict == Verdict.TRANSIENT
    assert "arm64-a" in d.message and "NFS client" in d.message


def test_normal_events_are_not_diagnoses_but_scale_up_is_noticed():
    scale_up = event("TriggeredScaleUp", "pod triggered scale-up: [{arm64-pool 0->1 (max: 5)}]",
                     kind="Pod", name=POD, type_="Normal")
    assert diagnose_event(scale_up) is None
    assert scale_up_under_way(scale_up)
    assert not scale_up_under_way(event("FailedScheduling", "0/2 nodes are available"))


def test_a_missing_claim_makes_the_pod_unschedulable_for_good():
    pod = {"metadata": {"name": POD}, "spec": {"nodeSelector": {"kubernetes.io/arch": "arm64"}},
           "status": {"phase": "Pending", "conditions": [{
               "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
               "message": '0/2 nodes are available: persistentvolumeclaim "multiarch-shared" not '
                          "found. preemption: 0/2 nodes are available: 2 Preemption is not "
                          "helpful for scheduling."}]}}
    d = diagnose_pod(pod)
    assert d.verdict == Verdict.PERMANENT
    assert "shared_claim" in d.message and "multiarch-shared" in d.message
