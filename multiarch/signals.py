"""Hold SIGTERM and SIGINT across a short section that must not stop half-way.

Prefect turns SIGTERM into an exception raised wherever the main thread happens to be. In
the middle of writing tags that would leave them split: some moved, some not. The tag
section (record, write, verify, roll back) instead runs with the signals held; the caller
sees which arrived, undoes what it did, and the signals are delivered again, to the
handlers they were meant for, as soon as the section ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

HELD = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def signals_held() -> Iterator[list[int]]:
    """Yield the list of signals that arrive inside the block; deliver them after it.

    Only the main thread receives signals in Python; elsewhere this holds nothing.
    """
    arrived: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield arrived
        return

    def hold(signum: int, _frame: FrameType | None) -> None:
        arrived.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in HELD}
    try:
        yield arrived
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(arrived):
            signal.raise_signal(sig)
