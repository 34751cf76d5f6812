"""One attempt of a flow run, and the Jobs it must not leave behind.

With the work pool's `backoff_limit: 0`, a SIGTERM to the flow-run pod (eviction, a
drained node, a cancelled Job) makes Prefect reschedule the run: the engine exits without
its cancellation hooks, and the next attempt, in a new pod, keeps the flow-run id. So:

- each process is one attempt, named by `ATTEMPT` (random, in a label on every Job and in
  the Kubernetes paths of the run), so one attempt never meets another's Jobs or files;
- before its first Job, an attempt deletes the Jobs of its flow run that another attempt
  left (`sweep_previous_attempts`, by label);
- on SIGTERM this process deletes its own Jobs, then hands the signal to the handler that
  was there before (`install_sigterm_cleanup`); the atexit delete stays as well;
- in a cluster, every Job is owned by the flow-run pod's Job (ownership.py), so the
  garbage collector removes what a SIGKILL left.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import threading
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

import urllib3
from kubernetes.client.rest import ApiException

from multiarch.runners.kubernetes.client import KubeApi, api_error, delete_all_jobs
from multiarch.runners.kubernetes.manifests import LABEL_ATTEMPT, LABEL_FLOW_RUN, label_value
from multiarch.runners.kubernetes.ownership import flow_run_owner

ATTEMPT = secrets.token_hex(4)
SWEEP_TIMEOUT_S = 20  # Prefect allows a terminated flow process 30 s before SIGKILL

Handler = Callable[[int, FrameType | None], Any] | int | None


def attempt_run_id(run_id: str) -> str:
    """The run id of this attempt: Kubernetes paths (`/shared/<id>/`) are never shared
    with a previous attempt of the same flow run, which may still be writing there."""
    return f"{run_id}-{ATTEMPT}"


def previous_attempts_selector(flow_run_id: str) -> str:
    return f"{LABEL_FLOW_RUN}={label_value(flow_run_id)},{LABEL_ATTEMPT}!={ATTEMPT}"


def this_attempt_selector() -> str:
    return f"{LABEL_ATTEMPT}={ATTEMPT}"


def delete_jobs_matching(api: KubeApi, selector: str) -> None:
    """Delete, with their pods, the Jobs of the namespace that carry these labels."""
    api.batch.delete_collection_namespaced_job(
        api.namespace, label_selector=selector, propagation_policy="Background",
        _request_timeout=SWEEP_TIMEOUT_S)


_state_lock = threading.RLock()
_swept: set[tuple[str, str]] = set()
_used: dict[str, KubeApi] = {}  # namespace -> access, for the SIGTERM sweep
_installed = False


def sweep_previous_attempts(api: KubeApi, flow_run_id: str, *,
                            emit: Callable[[str], None]) -> None:
    """Once per flow run and namespace: delete what earlier attempts of it left. Runs
    of no flow run (the CLI) have no earlier attempts."""
    if not label_value(flow_run_id):
        return
    with _state_lock:
        if (api.namespace, flow_run_id) in _swept:
            return
        try:
            delete_jobs_matching(api, previous_attempts_selector(flow_run_id))
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            raise api_error(exc, what="deleting Jobs of a previous attempt") from exc
        _swept.add((api.namespace, flow_run_id))
    emit(f"[kubernetes] attempt {ATTEMPT}: deleted any Jobs a previous attempt of flow run "
         f"{flow_run_id} left in {api.namespace}")


def delete_attempt_jobs() -> None:
    """Delete every Job of this attempt: those recorded, and by label those whose create
    call had not yet answered."""
    delete_all_jobs()
    with _state_lock:
        used = list(_used.values())
    for api in used:
        with contextlib.suppress(ApiException, urllib3.exceptions.HTTPError):
            delete_jobs_matching(api, this_attempt_selector())


def on_sigterm(previous: Handler) -> Callable[[int, FrameType | None], None]:
    """A SIGTERM handler: delete this attempt's Jobs, then do what `previous` would."""

    def handler(signum: int, frame: FrameType | None) -> None:
        delete_attempt_jobs()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    return handler


def install_sigterm_cleanup() -> bool:
    """Install the handler once, chained to the current one. Only the main thread may set
    handlers (build tasks run in worker threads): elsewhere, False."""
    global _installed
    if threading.current_thread() is not threading.main_thread():
        return _installed
    with _state_lock:
        if not _installed:
            signal.signal(signal.SIGTERM, on_sigterm(signal.getsignal(signal.SIGTERM)))
            _installed = True
    return True


def start_attempt(api: KubeApi, flow_run_id: str, *,
                  emit: Callable[[str], None]) -> Mapping[str, str] | None:
    """Before a Job is created: sweep earlier attempts, remember the namespace for the
    SIGTERM sweep, and return the owner every Job of this attempt gets (or None)."""
    install_sigterm_cleanup()
    with _state_lock:
        _used.setdefault(api.namespace, api)
    sweep_previous_attempts(api, flow_run_id, emit=emit)
    return _owner(api)


_owners: dict[str, Mapping[str, str] | None] = {}


def _owner(api: KubeApi) -> Mapping[str, str] | None:
    with _state_lock:
        if api.namespace not in _owners:
            _owners[api.namespace] = flow_run_owner(api)
        return _owners[api.namespace]
