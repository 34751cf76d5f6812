"""What a Job's conditions and its Warning events say about a build: pure, tested on dicts.

Many failures never produce a running pod, so a pod watch alone waits the whole timeout:
the Job controller cannot create the pod (PodSecurity, ResourceQuota, LimitRange) and says
so only in a FailedCreate event on the Job; the kubelet cannot mount a volume (a missing
Secret or claim, no NFS client) and says so in FailedMount events on the pod; the Job
controller ends the Job (deadline, backoff limit, pod failure policy) and says so in its
conditions. These rules turn each into a Diagnosis with the fix; the runner fails within
seconds of the event. An event that is not decisive yields a PENDING diagnosis, which the
runner only logs (the controllers retry on their own).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from multiarch.runners.kubernetes.diagnostics import Diagnosis, Verdict

SCALE_UP_REASON = "TriggeredScaleUp"  # cluster-autoscaler, on the pod
# A FailedCreate whose message contains one of these will not go away by retrying.
ADMISSION_REFUSALS = {
    "violates PodSecurity": "the namespace's Pod Security level forbids the build pod: label "
                            "the namespace pod-security.kubernetes.io/enforce=privileged, or "
                            "set runner.kubernetes.security to minimal with a baseline level "
                            "that allows it (docs/kubernetes.md)",
    "exceeded quota": "a ResourceQuota of the namespace refuses the pod: raise the quota or "
                      "lower the requests in runner.kubernetes.placements",
    "must specify": "a ResourceQuota requires requests/limits: set resources in "
                    "runner.kubernetes.placements",
    "usage per Container": "a LimitRange of the namespace refuses the pod's resources: fit "
                           "runner.kubernetes.placements to the LimitRange",
    "usage per Pod": "a LimitRange of the namespace refuses the pod's resources: fit "
                     "runner.kubernetes.placements to the LimitRange",
    "denied the request": "an admission webhook refuses the pod: ask the cluster's "
                          "administrators which policy applies",
    "forbidden": "the API server refuses the pod: see the message for the policy",
    "is invalid": "the API server refuses the pod spec: see the message",
}
NFS_CLIENT_MISSING = ("mount.nfs", "bad option", "wrong fs type")


def diagnose_job(job: Mapping[str, Any]) -> Diagnosis | None:
    """A Job the controller has ended (or is ending: FailureTarget, Kubernetes 1.31+)."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") not in ("Failed", "FailureTarget") or \
                condition.get("status") != "True":
            continue
        reason = condition.get("reason") or "Failed"
        message = (condition.get("message") or "").strip()
        if reason == "DeadlineExceeded":
            return Diagnosis(verdict=Verdict.PERMANENT, step="job",
                             summary=f"Job {_name(job)} ran past its deadline (Job deadline"
                                     f"{': ' + message if message else ''})",
                             resolution="raise runner.timeout_s or make the build faster")
        return Diagnosis(verdict=Verdict.PERMANENT, step="job",
                         summary=f"Job {_name(job)} failed ({reason}"
                                 f"{': ' + message if message else ''})")
    return None


def job_deadline_exceeded(job: Mapping[str, Any]) -> bool:
    """The Job controller ended (or is ending) the Job at activeDeadlineSeconds."""
    return any(c.get("type") in ("Failed", "FailureTarget") and c.get("status") == "True"
               and c.get("reason") == "DeadlineExceeded"
               for c in (job.get("status") or {}).get("conditions") or [])


def diagnose_event(event: Mapping[str, Any]) -> Diagnosis | None:
    """A Warning event on the Job or its pod; None for events that say nothing wrong."""
    if event.get("type") != "Warning":
        return None
    reason = event.get("reason") or ""
    message = (event.get("message") or "").strip()
    involved = event.get("involvedObject") or {}
    where = f"{(involved.get('kind') or 'object').lower()} {involved.get('name', '?')}"
    if reason == "FailedCreate":
        return _failed_create(where, message)
    if reason in ("FailedMount", "FailedAttachVolume"):
        return _failed_mount(where, reason, message, event)
    return Diagnosis(verdict=Verdict.PENDING, summary=f"{where}: {reason}: {message}")


def scale_up_under_way(event: Mapping[str, Any]) -> bool:
    """The cluster autoscaler is adding a node for this pod: worth waiting for."""
    return event.get("reason") == SCALE_UP_REASON


def _failed_create(where: str, message: str) -> Diagnosis:
    for marker, resolution in ADMISSION_REFUSALS.items():
        if marker in message:
            return Diagnosis(verdict=Verdict.PERMANENT, resolution=resolution,
                             summary=f"{where} cannot create its pod: {message}")
    return Diagnosis(verdict=Verdict.PENDING,
                     summary=f"{where} cannot create its pod yet: {message}")


def _failed_mount(where: str, reason: str, message: str, event: Mapping[str, Any]) -> Diagnosis:
    node = (event.get("source") or {}).get("host") or event.get("reportingInstance") or "its node"
    if "not found" in message:
        return Diagnosis(verdict=Verdict.PERMANENT,
                         summary=f"{where} cannot mount a volume ({reason}): {message}",
                         resolution="create the missing Secret or PersistentVolumeClaim in the "
                                    "namespace, or fix its name in runner.kubernetes "
                                    "(shared_claim, registry_secret, git_credentials_secret, "
                                    "build_secrets)")
    if any(marker in message for marker in NFS_CLIENT_MISSING):
        return Diagnosis(verdict=Verdict.TRANSIENT,
                         summary=f"{where} cannot mount the shared volume on {node} "
                                 f"({reason}): {message}",
                         resolution=f"install the NFS client (nfs-common, nfs-utils) on {node};"
                                    " retrying, possibly on another node")
    return Diagnosis(verdict=Verdict.PENDING, summary=f"{where}: {reason}: {message}")


def _name(obj: Mapping[str, Any]) -> str:
    return (obj.get("metadata") or {}).get("name", "?")
