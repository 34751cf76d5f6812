"""Container logs as the kubelet keeps them: timestamped lines per container, followable.

Runners stream build output with `follow=True`, `timestamps=True` and resume after a
dropped connection, so the agent keeps every line with its RFC3339Nano time and serves
the kubelet's query options (the API server proxies `pods/log` here), plus a hook that
drops one follow stream mid-way.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from tests.cluster.agent.kubeapi import ApiError

_TIME_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


def rfc3339nano(ts_ns: int) -> str:
    """The kubelet's fixed-width form: `2006-01-02T15:04:05.000000000Z`."""
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"


def parse_rfc3339(text: str) -> int:
    """RFC3339 with optional fraction (up to nanoseconds) to Unix nanoseconds."""
    found = _TIME_RE.match(text.strip())
    if not found:
        raise ApiError(400, "BadRequest", f'parsing time "{text}" as RFC3339 failed')
    base, fraction, zone = found.groups()
    zone = "+00:00" if zone == "Z" else zone
    stamp = datetime.datetime.fromisoformat(base + zone)
    return int(stamp.timestamp()) * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))


@dataclass(frozen=True)
class LogLine:
    ts_ns: int
    stream: str  # "stdout" or "stderr"
    data: bytes  # with its newline, if the process wrote one


class ContainerLog:
    """One container run's lines; followers wait on `changed()`."""

    def __init__(self) -> None:
        self.lines: list[LogLine] = []
        self.finished = False
        self._changed = asyncio.Event()

    def append(self, stream: str, data: bytes) -> None:
        last = self.lines[-1].ts_ns if self.lines else 0
        self.lines.append(LogLine(max(time.time_ns(), last + 1), stream, data))
        self._notify()

    def finish(self) -> None:
        self.finished = True
        self._notify()

    def changed(self) -> asyncio.Event:
        return self._changed

    def text(self) -> str:
        return b"".join(line.data for line in self.lines).decode("utf-8", errors="replace")

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


class LogStore:
    def __init__(self) -> None:
        self._logs: dict[tuple[str, str, str], ContainerLog] = {}
        self._drop_after: int | None = None
        self.dropped = 0  # follow streams cut by the drop hook so far

    def open(self, namespace: str, pod: str, container: str) -> ContainerLog:
        log = self._logs[(namespace, pod, container)] = ContainerLog()
        return log

    def get(self, namespace: str, pod: str, container: str) -> ContainerLog | None:
        return self._logs.get((namespace, pod, container))

    def discard(self, namespace: str, pod: str) -> None:
        """The pod is gone: end its followers, forget its lines."""
        for key in [k for k in self._logs if k[:2] == (namespace, pod)]:
            self._logs.pop(key).finish()

    def prune(self, alive: set[tuple[str, str]]) -> None:
        """Forget the logs of pods that no longer exist (namespace, name)."""
        for namespace, pod in {k[:2] for k in self._logs} - alive:
            self.discard(namespace, pod)

    def finish_all(self) -> None:
        for log in self._logs.values():
            log.finish()

    def drop_once(self, after_lines: int) -> None:
        self._drop_after = after_lines

    def should_drop(self, sent_lines: int) -> bool:
        if self._drop_after is not None and sent_lines >= self._drop_after:
            self._drop_after = None
            self.dropped += 1
            return True
        return False


@dataclass(frozen=True, kw_only=True)
class LogQuery:
    follow: bool = False
    timestamps: bool = False
    since_ns: int | None = None
    tail: int | None = None
    limit_bytes: int | None = None
    stream: str = "All"

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> LogQuery:
        def flag(name: str) -> bool:
            return params.get(name, "").lower() in ("true", "1")

        def number(name: str) -> int | None:
            value = params.get(name)
            if value is None:
                return None
            try:
                return int(value)
            except ValueError:
                raise ApiError(400, "BadRequest", f"invalid {name}: {value!r}") from None

        since_ns = None
        if params.get("sinceTime") and params.get("sinceSeconds"):
            raise ApiError(
                422, "Invalid", "at most one of `sinceTime` or `sinceSeconds` may be specified"
            )
        if params.get("sinceTime"):
            since_ns = parse_rfc3339(params["sinceTime"])
        elif (seconds := number("sinceSeconds")) is not None:
            since_ns = time.time_ns() - seconds * 1_000_000_000
        return cls(
            follow=flag("follow"),
            timestamps=flag("timestamps"),
            since_ns=since_ns,
            tail=number("tailLines"),
            limit_bytes=number("limitBytes"),
            stream=params.get("stream") or "All",
        )

    def wants(self, line: LogLine) -> bool:
        return (self.since_ns is None or line.ts_ns >= self.since_ns) and self.stream in (
            "All",
            line.stream.capitalize(),
        )

    def render(self, line: LogLine) -> bytes:
        return (
            (rfc3339nano(line.ts_ns) + " ").encode() + line.data if self.timestamps else line.data
        )


async def stream_log(
    log: ContainerLog, query: LogQuery, *, store: LogStore, hang_up: Callable[[], None]
) -> AsyncIterator[bytes]:
    """Existing lines (since/tail), then, when following, new ones until the container ends."""
    start = [line for line in log.lines if query.wants(line)]
    if query.tail is not None:
        start = start[-query.tail :] if query.tail > 0 else []
    cursor, sent_lines, sent_bytes = len(log.lines), 0, 0
    pending = start
    while True:
        for line in pending:
            chunk = query.render(line)
            if query.limit_bytes is not None:
                chunk = chunk[: max(0, query.limit_bytes - sent_bytes)]
                if not chunk:
                    return
            yield chunk
            sent_lines, sent_bytes = sent_lines + 1, sent_bytes + len(chunk)
            if query.follow and store.should_drop(sent_lines):
                hang_up()
                return
        if not query.follow or (log.finished and cursor >= len(log.lines)):
            return
        changed = log.changed()
        if cursor >= len(log.lines) and not log.finished:
            await changed.wait()
        pending = [line for line in log.lines[cursor:] if query.wants(line)]
        cursor = len(log.lines)
