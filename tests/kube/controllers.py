"""kube-controller-manager and kube-scheduler for the fake cluster, as level-triggered syncs.

Each function looks at the whole state and moves it one step, like the real controllers
(they never assume they saw every change). Behaviour follows Kubernetes 1.31:

- Job controller: one pod per Job from the template (`<job>-xxxxx`, job-name and
  controller-uid labels, a controller ownerReference, the job-tracking finalizer);
  status startTime/active/ready/terminating/succeeded/failed; SuccessCriteriaMet then
  Complete, or FailureTarget then Failed (BackoffLimitExceeded, DeadlineExceeded), the
  terminal condition only once no pod is still running or terminating.
- Garbage collector: Background deletes orphaned dependents, Foreground deletes them
  before the owner, Orphan strips their ownerReferences. A batch/v1 Job deleted without
  a propagationPolicy orphans its pods (which keep running): the legacy default.
- TTL-after-finished: deletes finished Jobs (Background) after ttlSecondsAfterFinished.
- Pod GC: pods bound to a node that no longer exists become Failed with a
  DisruptionTarget condition (DeletionByPodGC) and are force-deleted.
- Scheduler: nodeSelector/affinity/taints (see `scheduler.py`); PodScheduled=False
  Unschedulable plus a FailedScheduling event, retried whenever anything changes.

Time is compressed: no backoff between Job retries, no 40 s node grace period, no
pod GC quarantine.
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from typing import Any

from tests.kube import admission, events
from tests.kube.scheduler import schedule
from tests.kube.store import CLAIMS, JOBS, NODES, PODS, Obj, Store, now_rfc3339

JOB_TRACKING = "batch.kubernetes.io/job-tracking"
TERMINAL = ("Succeeded", "Failed")
BACKOFF = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
DEADLINE = ("DeadlineExceeded", "Job was active longer than specified deadline")
COMPLETIONS = ("CompletionsReached", "Reached expected number of succeeded pods")


def _terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in TERMINAL


def _deleting(obj: Obj) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def _seconds_since(stamp: str) -> float:
    then = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return (datetime.datetime.now(datetime.UTC) - then).total_seconds()


def _owned_by(pods: list[Obj]) -> dict[str, list[Obj]]:
    owned: dict[str, list[Obj]] = defaultdict(list)
    for pod in pods:
        for ref in pod["metadata"].get("ownerReferences") or []:
            owned[ref["uid"]].append(pod)
    return owned


def _condition(conditions: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c["type"] == kind and c["status"] == "True"), None)


def _add_condition(conditions: list[dict[str, Any]], kind: str, reason: tuple[str, str]) -> None:
    now = now_rfc3339()
    conditions.append(
        {
            "type": kind,
            "status": "True",
            "lastProbeTime": now,
            "lastTransitionTime": now,
            "reason": reason[0],
            "message": reason[1],
        }
    )


# --- Job controller --------------------------------------------------------------------


def sync_jobs(store: Store) -> None:
    pods = store.list(PODS)
    owned = _owned_by(pods)
    for job in store.list(JOBS):
        _sync_job(store, job, owned.get(job["metadata"]["uid"], []))
    # Pods whose Job is gone keep no tracking finalizer once they are done.
    jobs = {j["metadata"]["uid"] for j in store.list(JOBS)}
    for pod in pods:
        refs = {r["uid"] for r in pod["metadata"].get("ownerReferences") or []}
        if (
            JOB_TRACKING in (pod["metadata"].get("finalizers") or [])
            and not refs & jobs
            and (_terminal(pod) or _deleting(pod))
        ):
            _release(store, pod)


def _release(store: Store, pod: Obj) -> None:
    store.remove_finalizer(
        PODS, pod["metadata"]["namespace"], pod["metadata"]["name"], JOB_TRACKING
    )


def _sync_job(store: Store, job: Obj, pods: list[Obj]) -> None:
    meta, spec = job["metadata"], job["spec"]
    status = dict(job.get("status") or {})
    conditions = list(status.get("conditions") or [])
    tracked = [p for p in pods if JOB_TRACKING in (p["metadata"].get("finalizers") or [])]
    if _deleting(job) or _condition(conditions, "Complete") or _condition(conditions, "Failed"):
        for pod in tracked:
            if _terminal(pod) or _deleting(pod):
                _release(store, pod)
        return
    newly_done = [p for p in tracked if _terminal(p) or _deleting(p)]
    succeeded = status.get("succeeded", 0) + sum(
        p["status"].get("phase") == "Succeeded" for p in newly_done
    )
    failed = status.get("failed", 0) + sum(
        p["status"].get("phase") != "Succeeded" for p in newly_done
    )
    active = [p for p in pods if not _terminal(p) and not _deleting(p)]
    terminating = [p for p in pods if _deleting(p) and not _terminal(p)]
    status.setdefault("startTime", now_rfc3339())

    target = _condition(conditions, "FailureTarget") or _condition(conditions, "SuccessCriteriaMet")
    if target is None:
        deadline = spec.get("activeDeadlineSeconds")
        if failed > spec.get("backoffLimit", 6):
            _add_condition(conditions, "FailureTarget", BACKOFF)
        elif succeeded >= spec.get("completions", 1):
            _add_condition(conditions, "SuccessCriteriaMet", COMPLETIONS)
        elif deadline is not None and _seconds_since(status["startTime"]) >= deadline:
            _add_condition(conditions, "FailureTarget", DEADLINE)
        target = _condition(conditions, "FailureTarget") or _condition(
            conditions, "SuccessCriteriaMet"
        )
    if target is not None:
        for pod in active:
            store.delete(
                PODS,
                pod["metadata"]["namespace"],
                pod["metadata"]["name"],
                propagation="Background",
            )
            events.record(
                store,
                job,
                reason="SuccessfulDelete",
                component="job-controller",
                message=f"Deleted pod: {pod['metadata']['name']}",
            )
        terminating += active
        active = []
        if not terminating:
            _finish(store, job, status, conditions, target)
    elif not active and not terminating and not spec.get("suspend"):
        active.append(_create_pod(store, job))

    status.update(
        conditions=conditions,
        ready=sum(_ready(p) for p in active),
        terminating=len(terminating),
        uncountedTerminatedPods={},
    )
    for field, value in (("active", len(active)), ("succeeded", succeeded), ("failed", failed)):
        if value:
            status[field] = value
        else:
            status.pop(field, None)
    if not conditions:
        status.pop("conditions")
    store.mutate(JOBS, meta["namespace"], meta["name"], lambda j: j.update(status=status))
    for pod in newly_done:
        _release(store, pod)


def _finish(
    store: Store,
    job: Obj,
    status: dict[str, Any],
    conditions: list[dict[str, Any]],
    target: dict[str, Any],
) -> None:
    reason = (target["reason"], target["message"])
    if target["type"] == "SuccessCriteriaMet":
        _add_condition(conditions, "Complete", reason)
        status["completionTime"] = now_rfc3339()
        events.record(
            store, job, reason="Completed", message="Job completed", component="job-controller"
        )
    else:
        _add_condition(conditions, "Failed", reason)
        events.record(
            store,
            job,
            reason=reason[0],
            message=reason[1],
            type="Warning",
            component="job-controller",
        )


def _ready(pod: Obj) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (pod.get("status") or {}).get("conditions", [])
    )


def _create_pod(store: Store, job: Obj) -> Obj:
    meta, template = job["metadata"], job["spec"]["template"]
    pod = {
        "metadata": {
            "generateName": f"{meta['name']}-",
            "labels": dict(template.get("metadata", {}).get("labels") or {}),
            "annotations": dict(template.get("metadata", {}).get("annotations") or {}),
            "finalizers": [JOB_TRACKING],
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": template["spec"],
    }
    created = store.create(PODS, meta["namespace"], pod, admit=admission.admit)
    events.record(
        store,
        job,
        reason="SuccessfulCreate",
        component="job-controller",
        message=f"Created pod: {created['metadata']['name']}",
    )
    return created


# --- garbage collector, TTL, pod GC ----------------------------------------------------


def collect_garbage(store: Store) -> None:
    jobs = store.list(JOBS)
    pods = store.list(PODS)
    owned = _owned_by(pods)
    for job in jobs:
        meta = job["metadata"]
        if not _deleting(job):
            continue
        dependents = owned.get(meta["uid"], [])
        finalizers = meta.get("finalizers") or []
        if "orphan" in finalizers:
            for pod in dependents:
                store.mutate(
                    PODS,
                    pod["metadata"]["namespace"],
                    pod["metadata"]["name"],
                    lambda p, uid=meta["uid"]: p["metadata"].update(
                        ownerReferences=[
                            r for r in p["metadata"].get("ownerReferences") or [] if r["uid"] != uid
                        ]
                    ),
                )
            store.remove_finalizer(JOBS, meta["namespace"], meta["name"], "orphan")
        elif "foregroundDeletion" in finalizers:
            for pod in dependents:
                if not _deleting(pod):
                    store.delete(
                        PODS,
                        pod["metadata"]["namespace"],
                        pod["metadata"]["name"],
                        propagation="Background",
                    )
            if not dependents:
                store.remove_finalizer(JOBS, meta["namespace"], meta["name"], "foregroundDeletion")
    alive = {j["metadata"]["uid"] for j in store.list(JOBS)}
    for pod in store.list(PODS):  # fresh: orphaning above changed ownerReferences
        refs = pod["metadata"].get("ownerReferences") or []
        if refs and not _deleting(pod) and all(r["uid"] not in alive for r in refs):
            store.delete(
                PODS,
                pod["metadata"]["namespace"],
                pod["metadata"]["name"],
                propagation="Background",
            )


def expire_finished_jobs(store: Store) -> None:
    for job in store.list(JOBS):
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        status = job.get("status") or {}
        done = _condition(status.get("conditions") or [], "Complete") or _condition(
            status.get("conditions") or [], "Failed"
        )
        if ttl is None or done is None or _deleting(job):
            continue
        if _seconds_since(status.get("completionTime") or done["lastTransitionTime"]) >= ttl:
            store.delete(
                JOBS,
                job["metadata"]["namespace"],
                job["metadata"]["name"],
                propagation="Background",
            )


def collect_orphaned_pods(store: Store) -> None:
    nodes = {n["metadata"]["name"] for n in store.list(NODES)}
    for pod in store.list(PODS):
        node = pod["spec"].get("nodeName")
        if not node or node in nodes or pod["metadata"].get("deletionGracePeriodSeconds") == 0:
            continue
        if not _terminal(pod):

            def fail(p: Obj) -> None:
                now = now_rfc3339()
                p["status"]["phase"] = "Failed"
                p["status"].setdefault("conditions", []).append(
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "lastProbeTime": None,
                        "lastTransitionTime": now,
                        "reason": "DeletionByPodGC",
                        "message": "PodGC: node no longer exists",
                    }
                )

            store.mutate(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"], fail)
        store.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"], grace_s=0)


# --- scheduler ---------------------------------------------------------------------------


def schedule_pods(store: Store) -> None:
    nodes = store.list(NODES)
    for pod in store.list(PODS):
        meta, spec = pod["metadata"], pod["spec"]
        if spec.get("nodeName") or _deleting(pod) or _terminal(pod):
            continue
        missing = next(
            (
                v["persistentVolumeClaim"]["claimName"]
                for v in spec.get("volumes") or []
                if "persistentVolumeClaim" in v
                and store.get(CLAIMS, meta["namespace"], v["persistentVolumeClaim"]["claimName"])
                is None
            ),
            None,
        )
        node, message = schedule(
            spec, nodes, prefilter_error=missing and f'persistentvolumeclaim "{missing}" not found'
        )
        if node is not None:
            _bind(store, pod, node)
        else:
            _unschedulable(store, pod, message)


def _scheduled_condition(status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    condition = {
        "type": "PodScheduled",
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": now_rfc3339(),
    }
    if reason:
        condition.update(reason=reason, message=message)
    return condition


def _bind(store: Store, pod: Obj, node: str) -> None:
    def bind(p: Obj) -> None:
        p["spec"]["nodeName"] = node
        others = [c for c in p["status"].get("conditions", []) if c["type"] != "PodScheduled"]
        p["status"]["conditions"] = [*others, _scheduled_condition("True")]

    meta = pod["metadata"]
    bound = store.mutate(PODS, meta["namespace"], meta["name"], bind)
    if bound is not None:
        events.record(
            store,
            bound,
            reason="Scheduled",
            component="default-scheduler",
            message=f"Successfully assigned {meta['namespace']}/{meta['name']} to {node}",
        )


def _unschedulable(store: Store, pod: Obj, message: str) -> None:
    current = next(
        (c for c in pod["status"].get("conditions", []) if c["type"] == "PodScheduled"), {}
    )
    if current.get("message") == message:
        return

    def mark(p: Obj) -> None:
        others = [c for c in p["status"].get("conditions", []) if c["type"] != "PodScheduled"]
        p["status"]["conditions"] = [
            *others,
            _scheduled_condition("False", "Unschedulable", message),
        ]

    meta = pod["metadata"]
    marked = store.mutate(PODS, meta["namespace"], meta["name"], mark)
    if marked is not None:
        events.record(
            store,
            marked,
            reason="FailedScheduling",
            type="Warning",
            component="default-scheduler",
            message=message,
        )
