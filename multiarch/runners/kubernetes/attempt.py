"""One attempt of a flow run, and the Jobs it must not leave behind.

With the work pool's `backoff_limit: 0`, a SIGTERM to the flow-run pod (eviction, a
drained node, a cancelled Job) makes Prefect reschedule the run: the engine exits without
its cancellation hooks, and the next attempt, in a new pod, keeps the flow-run id. So:

- each process is one attempt, named by `ATTEMPT` (random, in a label on every Job and in
  the Kubernetes paths of the run), so one attempt never meets another's Jobs or files;
- before its first Job, an attempt deletes the Jobs of its flow run that another attempt
  left (`sweep_previous_attempts`, by label);
- on SIGTERM this process deletes its own Jobs and refuses new ones (a task retry after
  the stop would otherwise start one). Inside a Prefect flow run, Prefect's own handler
  turns SIGTERM into TerminationSignal, the run's `finishing` block calls `stop_all`, and
  that reaches `delete_attempt_jobs`: Prefect 3.9 acknowledges a reschedule only while
  its own handler is installed (else its supervisor SIGKILLs the engine, and nothing is
  cleaned), so there the runner leaves the handler alone. Elsewhere (a plain run)
  `install_sigterm_cleanup` installs one, chained to the handler that was there before.
  The atexit delete stays as well;
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

from multiarch.errors import PermanentError
from multiarch.runners.kubernetes.client import KubeApi, api_error, delete_all_jobs
from multiarch.runners.kubernetes.manifests import LABEL_ATTEMPT, LABEL_FLOW_RUN, label_value
from multiarch.runners.kubernetes.ownership import flow_run_owner

ATTEMPT = secrets.token_hex(4)
SWEEP_TIMEOUT_S = 20  # Prefect allows a terminated flow process 30 s before SIGKILL

Handler = Callable[[int, FrameType | None], Any] | int | None


class AttemptStopped(PermanentError):
    """This attempt was stopped (SIGTERM, cancellation): it starts no Job any more."""


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
_stopped: set[str] = set()  # flow runs whose Jobs were stopped: no new Job for them
_SWEEPER = "_multiarch_sweeps_jobs"  # marks our handler among signal handlers


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
    call had not yet answered; the flow runs seen so far start no Job any more."""
    with _state_lock:
        _stopped.update(flow_run for _, flow_run in _swept)
        used = list(_used.values())
    delete_all_jobs()
    for api in used:
        with contextlib.suppress(ApiException, urllib3.exceptions.HTTPError):
            delete_jobs_matching(api, this_attempt_selector())


def allow_new_jobs() -> None:
    """A run starts (its preflight): stops of earlier runs in this process (a flow retry
    runs in the same process) no longer refuse Jobs."""
    with _state_lock:
        _stopped.clear()


def on_sigterm(previous: Handler) -> Callable[[int, FrameType | None], None]:
    """A SIGTERM handler: delete this attempt's Jobs, then do what `previous` would."""

    def handler(signum: int, frame: FrameType | None) -> None:
        delete_attempt_jobs()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    setattr(handler, _SWEEPER, True)
    return handler


def is_prefect_handler(handler: Handler) -> bool:
    """Prefect's SIGTERM bridge (or any handler of Prefect's): it must stay the installed
    one for Prefect to acknowledge a reschedule, and it reaches our cleanup anyway."""
    return (getattr(handler, "__module__", None) or "").split(".")[0] == "prefect"


def install_sigterm_cleanup() -> bool:
    """Install the handler, chained to the current one, unless it is there already or
    Prefect's is. Only the main thread may set handlers (build tasks run in worker
    threads). True when ours is the installed handler."""
    if threading.current_thread() is not threading.main_thread():
        return False
    with _state_lock:
        current = signal.getsignal(signal.SIGTERM)
        if getattr(current, _SWEEPER, False):
            return True
        if is_prefect_handler(current):
            return False
        signal.signal(signal.SIGTERM, on_sigterm(current))
    return True


def start_attempt(api: KubeApi, flow_run_id: str, *,
                  emit: Callable[[str], None]) -> Mapping[str, str] | None:
    """Before a Job is created: sweep earlier attempts, remember the namespace for the
    SIGTERM sweep, and return the owner every Job of this attempt gets (or None)."""
    install_sigterm_cleanup()
    with _state_lock:
        if flow_run_id in _stopped:
            raise AttemptStopped(f"flow run {flow_run_id} was stopped in this process: no "
                                 "new Job (a later attempt of it will build)")
        _used.setdefault(api.namespace, api)
    sweep_previous_attempts(api, flow_run_id, emit=emit)
    return _owner(api)


_owners: dict[str, Mapping[str, str] | None] = {}


def _owner(api: KubeApi) -> Mapping[str, str] | None:
    with _state_lock:
        if api.namespace not in _owners:
            _owners[api.namespace] = flow_run_owner(api)
        return _owners[api.namespace]
