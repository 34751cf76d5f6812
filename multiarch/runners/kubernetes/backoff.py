"""How long to wait before asking the API server again: exponential backoff, full jitter.

A watch or a log stream that fails must not be reopened at once: against an unreachable
server that made thousands of requests a second. Full jitter (a uniform draw between 0 and
the doubling cap, as in the AWS architecture note "Exponential Backoff And Jitter") keeps
the many followers of one flow run from retrying in step. A server that says when to come
back (429/503 with `Retry-After`) is obeyed. Pure apart from the injected random source,
so the schedule is testable.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

INITIAL_DELAY_S = 0.5
MAX_DELAY_S = 30.0
MAX_RETRY_AFTER_S = 300.0  # a server asking for longer is still asked again after this


@dataclass(kw_only=True)
class Backoff:
    """Delays for consecutive failures; `reset` after a request that worked."""

    initial_s: float = INITIAL_DELAY_S
    cap_s: float = MAX_DELAY_S
    draw: Callable[[], float] = field(default=random.random)  # uniform in [0, 1)
    failures: int = 0

    def next_delay(self, *, retry_after_s: float | None = None) -> float:
        ceiling = min(self.cap_s, self.initial_s * 2 ** min(self.failures, 32))
        self.failures += 1
        delay = self.draw() * ceiling
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
        return delay

    def reset(self) -> None:
        self.failures = 0
