"""Which Job owns our Jobs: the flow-run pod's own Job, when the flow runs in the cluster.

The Prefect worker runs each flow run as a Job. Build and publish Jobs that name that Job
in their ownerReferences are deleted by the garbage collector when it goes (cancelled,
deleted by the worker or its TTL), even if this process was killed before it could
delete them itself.

An owner must live in the dependent's namespace: the garbage collector takes an owner it
cannot find there for gone and deletes the dependent at once. So a flow-run pod in another
namespace than the Jobs gives them no owner.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes.client.rest import ApiException

from multiarch.runners.kubernetes.client import KubeApi
from multiarch.runners.kubernetes.manifests import owner_reference

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
POD_NAME_ENV = "POD_NAME"  # set through the downward API; else HOSTNAME, a pod's own name
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


@dataclass(frozen=True)
class OwnPod:
    name: str
    namespace: str


def own_pod(env: Mapping[str, str] = os.environ,
            service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> OwnPod | None:
    """This process's pod, when it runs in one: the service account's mounted namespace
    file and the API server's address in the environment, as the kubelet provides them."""
    if not env.get("KUBERNETES_SERVICE_HOST"):
        return None
    try:
        namespace = (service_account_dir / "namespace").read_text().strip()
    except OSError:
        return None
    name = env.get(POD_NAME_ENV) or env.get("HOSTNAME")
    return OwnPod(name=name, namespace=namespace) if name and namespace else None


def owning_job(pod: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """The Job a pod belongs to: (name, uid) from its ownerReferences, else (name, None)
    from the Job controller's label, else None (not a Job's pod)."""
    metadata = pod.get("metadata") or {}
    for ref in metadata.get("ownerReferences") or []:
        if ref.get("kind") == "Job" and ref.get("apiVersion") == "batch/v1":
            return ref["name"], ref.get("uid")
    labels = metadata.get("labels") or {}
    name = next((labels[key] for key in JOB_NAME_LABELS if labels.get(key)), None)
    return (name, None) if name else None


def flow_run_owner(api: KubeApi, *, env: Mapping[str, str] = os.environ,
                   service_account_dir: Path = SERVICE_ACCOUNT_DIR
                   ) -> dict[str, str] | None:
    """An ownerReference to the flow-run pod's Job, or None (outside a cluster, another
    namespace, not a Job's pod, or the pod cannot be read)."""
    pod = own_pod(env, service_account_dir)
    if pod is None or pod.namespace != api.namespace:
        return None
    try:
        raw = api.api_client.sanitize_for_serialization(
            api.core.read_namespaced_pod(pod.name, pod.namespace, _request_timeout=30))
        job = owning_job(raw)
        if job is None:
            return None
        name, uid = job
        if uid is None:
            uid = api.batch.read_namespaced_job(name, pod.namespace,
                                                _request_timeout=30).metadata.uid
    except (ApiException, urllib3.exceptions.HTTPError):
        return None
    return owner_reference(name=name, uid=uid) if uid else None
