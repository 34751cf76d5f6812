"""Cancellation that stops: turn every way a run can be cancelled into one path.

A run is cancelled three ways: a signal to its process (SIGTERM from a worker or a user,
Ctrl-C), or its state set to Cancelling through the API or UI while no worker watches it
(the CLI's own process). Prefect turns SIGTERM into `TerminationSignal` in the main thread;
the watcher below turns "Cancelling" into the same signal. The flow catches both in one
place, stops every build (steps killed, Jobs deleted) and ends the run Cancelled, so
publish never starts once cancellation began and the run is never left "Cancelling".
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from uuid import UUID

from prefect import runtime
from prefect.client.orchestration import get_client
from prefect.exceptions import TerminationSignal

POLL_INTERVAL_S = 1.0
_cancelled_through_api = threading.Event()


def is_cancelling(flow_run_id: UUID) -> bool:
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
    return bool(state and state.is_cancelling())


def raise_if_cancelling() -> None:
    """The last look before publish: a cancel seen by nobody yet still stops it."""
    flow_run_id = runtime.flow_run.id
    if flow_run_id is not None and is_cancelling(UUID(str(flow_run_id))):
        _cancelled_through_api.set()
        raise TerminationSignal(signal.SIGTERM)


def _watch(flow_run_id: UUID, stop: threading.Event, main_thread_id: int) -> None:
    while not stop.wait(POLL_INTERVAL_S):
        try:
            cancelling = is_cancelling(flow_run_id)
        except Exception:  # noqa: S112 - a blip of the API must not end the watch
            continue
        if cancelling:
            _cancelled_through_api.set()
            # A real signal, aimed at the main thread, so a blocking wait there is interrupted
            # (interrupt_main only runs the handler once the thread runs Python code again);
            # Prefect's SIGTERM bridge turns it into TerminationSignal.
            signal.pthread_kill(main_thread_id, signal.SIGTERM)
            return


@contextlib.contextmanager
def watch_for_cancellation() -> Iterator[None]:
    """While the body runs, a Cancelling state interrupts the main thread like SIGTERM."""
    flow_run_id = runtime.flow_run.id
    if flow_run_id is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    stop = threading.Event()
    watcher = threading.Thread(
        target=_watch, args=(UUID(str(flow_run_id)), stop, threading.get_ident()),
        name="cancellation-watch", daemon=True,
    )
    watcher.start()
    try:
        yield
    finally:
        stop.set()


def signal_name(exc: BaseException) -> str:
    """`SIGTERM`, `SIGINT`, `Prefect`: how the run was told to stop, for its final message."""
    if _cancelled_through_api.is_set():
        return "in Prefect"
    number = getattr(exc, "signal", signal.SIGINT if isinstance(exc, KeyboardInterrupt) else 0)
    try:
        return signal.Signals(number).name
    except ValueError:
        return "a signal"
