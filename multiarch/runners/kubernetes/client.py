"""Cluster access: connect, translate API errors, and the Jobs this process must delete.

Every Job created here is recorded until it is deleted, so cancellation (the runner's
`stop`) and interpreter exit delete the ones still live.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from dataclasses import dataclass

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from multiarch.errors import ConfigurationError, MultiarchError, TransientError
from multiarch.process import current_step_scope
from multiarch.runners.kubernetes.options import KubernetesOptions
from multiarch.runners.kubernetes.permissions import (
    NODE_READ,
    missing_permissions,
    require_permissions,
)


@dataclass(frozen=True)
class KubeApi:
    api_client: client.ApiClient
    batch: client.BatchV1Api
    core: client.CoreV1Api
    namespace: str

    @property
    def authorization(self) -> client.AuthorizationV1Api:
        return client.AuthorizationV1Api(self.api_client)


def connect(options: KubernetesOptions) -> KubeApi:
    """Cluster access from a credentials block, a kubeconfig, or the pod's service account."""
    configuration = client.Configuration()
    try:
        if options.credentials_block:
            _load_credentials_block(options.credentials_block, configuration)
        elif options.kubeconfig:
            config.load_kube_config(config_file=options.kubeconfig, context=options.kube_context,
                                    client_configuration=configuration)
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)
            except config.ConfigException:
                config.load_kube_config(context=options.kube_context,
                                        client_configuration=configuration)
    except (config.ConfigException, OSError) as exc:
        raise ConfigurationError(
            f"cannot load Kubernetes access ({exc}): set runner.kubernetes.kubeconfig, "
            "runner.kubernetes.credentials_block, or run inside the cluster"
        ) from exc
    api_client = client.ApiClient(configuration)
    return KubeApi(api_client=api_client, batch=client.BatchV1Api(api_client),
                   core=client.CoreV1Api(api_client), namespace=options.namespace)


def _load_credentials_block(name: str, configuration: client.Configuration) -> None:
    from prefect_kubernetes.credentials import KubernetesCredentials

    credentials = KubernetesCredentials.load(name)
    cluster = credentials.cluster_config
    if cluster is None:
        config.load_incluster_config(client_configuration=configuration)
        return
    config.load_kube_config_from_dict(cluster.config, context=cluster.context_name,
                                      client_configuration=configuration)


def api_error(exc: Exception, *, what: str) -> MultiarchError:
    """Translate an API failure into our hierarchy, with the fix in the message."""
    if isinstance(exc, ApiException):
        if exc.status in (401, 403):
            return ConfigurationError(
                f"{what}: forbidden ({exc.status}): grant the service account the Role in "
                "deployments/kubernetes (the runner's preflight names what is missing)"
            )
        if exc.status == 404:
            return ConfigurationError(f"{what}: not found: does the namespace exist?")
        if exc.status in (409, 422, 400):
            return ConfigurationError(f"{what}: rejected by the API server: {exc.reason}: "
                                      f"{(exc.body or '')[:300]}")
        return TransientError(f"{what}: API server answered {exc.status} {exc.reason}")
    return TransientError(f"{what}: cannot reach the API server: {exc}")


def preflight(options: KubernetesOptions) -> list[str]:
    """Before any build: the cluster answers, and we hold every permission the runner uses
    (all missing ones named at once, before any Job exists)."""
    api = connect(options)
    _check_permissions(api)
    try:
        api.batch.list_namespaced_job(api.namespace, limit=1, _request_timeout=30)
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        raise api_error(exc, what=f"listing Jobs in namespace {api.namespace}") from exc
    notes = [f"kubernetes: namespace {api.namespace} reachable, permissions granted"]
    if missing_permissions(api.authorization, "", NODE_READ):
        notes.append("kubernetes: cannot get nodes, so builds are reported as native and a "
                     "lost node is seen from its pods only: apply deployments/kubernetes "
                     "(ClusterRole multiarch-builder-nodes) to let the runner read Nodes")
    return notes


def _check_permissions(api: KubeApi) -> None:
    what = "asking the API server for the runner's permissions"
    try:
        require_permissions(api.authorization, api.namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise ConfigurationError(
                f"{what}: no authorization.k8s.io/v1 SelfSubjectAccessReview, which every "
                "Kubernetes API server serves: does the kubeconfig point at Kubernetes?"
            ) from exc
        raise api_error(exc, what=what) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise api_error(exc, what=what) from exc


_live_jobs: dict[tuple[str, str], KubeApi] = {}
# The build scope (multiarch.process.step_scope) that created each Job: a fleet runs several
# builds in one process, and one failing must delete its own Jobs, not its neighbours'.
_job_scopes: dict[tuple[str, str], str | None] = {}
# Re-entrant: the SIGTERM handler runs on the main thread, maybe inside one of these blocks.
_live_lock = threading.RLock()


def track_job(api: KubeApi, name: str) -> None:
    """Remember a Job just created, and the build it belongs to, until `delete_job`."""
    with _live_lock:
        _live_jobs[(api.namespace, name)] = api
        _job_scopes[(api.namespace, name)] = current_step_scope()


def delete_job(api: KubeApi, name: str) -> None:
    """Delete a Job and (Background propagation) its pods; a missing Job is fine."""
    with contextlib.suppress(ApiException, urllib3.exceptions.HTTPError):
        api.batch.delete_namespaced_job(name, api.namespace, propagation_policy="Background",
                                        _request_timeout=30)
    with _live_lock:
        _live_jobs.pop((api.namespace, name), None)
        _job_scopes.pop((api.namespace, name), None)


def delete_all_jobs() -> int:
    """Delete every Job this process created and has not yet deleted (cancellation, exit)."""
    with _live_lock:
        live = list(_live_jobs.items())
    for (_, name), api in live:
        delete_job(api, name)
    return len(live)


def delete_scope_jobs() -> int:
    """Delete the Jobs the current build scope created (a build failed; others go on);
    outside any scope, every Job."""
    scope = current_step_scope()
    if scope is None:
        return delete_all_jobs()
    with _live_lock:
        live = [(key, api) for key, api in _live_jobs.items() if _job_scopes.get(key) == scope]
    for (_, name), api in live:
        delete_job(api, name)
    return len(live)


atexit.register(delete_all_jobs)

