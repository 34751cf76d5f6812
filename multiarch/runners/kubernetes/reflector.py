"""Objects of one kind kept current: list, then watch from the list's resourceVersion.

The pattern of client-go's Reflector, reduced to what a build needs. A list gives the state
and a resourceVersion; a watch from that version gives every later change, and a watch
that ends normally (its `timeoutSeconds`) is reopened from the last version seen, so
nothing is missed and nothing is listed twice. When the server has compacted that version
away it answers 410 Gone (as a status or as an ERROR event): we list again. Any other
failure is retried after an exponential, jittered delay (`backoff`), honouring
`Retry-After`; 401/403/404 are not retried: they are reported to the consumer, translated
by `client.api_error` with the permission named, and the build fails.

Objects travel as the API server's JSON (plain dicts, camelCase): the pure rules in
diagnostics/events/nodes read those, and no model class is built for every event.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes.client.rest import ApiException

from multiarch.errors import MultiarchError
from multiarch.retry_after import retry_after_s
from multiarch.runners.kubernetes.backoff import Backoff
from multiarch.runners.kubernetes.client import KubeApi, api_error

WATCH_S = 60  # one watch request; reopened from the last resourceVersion when it ends
MIN_HEALTHY_WATCH_S = 1.0  # a watch ending sooner than this (without events) is a failure
FATAL_STATUSES = frozenset({401, 403, 404})
HTTP_GONE = 410
STOP_JOIN_S = 2.0


@dataclass(frozen=True)
class Change:
    """One object of `kind` as it now is (`type` ADDED/MODIFIED/DELETED, as in a watch)."""

    kind: str
    type: str
    obj: dict[str, Any]


@dataclass(frozen=True)
class Broken:
    """A watch that cannot go on (forbidden, namespace gone): the build must fail."""

    kind: str
    error: MultiarchError


class Reflector(threading.Thread):
    """Feeds `out` with the Changes of the objects one list call selects."""

    def __init__(self, *, kind: str, list_call: Callable[..., Any], namespace: str,
                 out: queue.Queue[Change | Broken], what: str, field_selector: str | None = None,
                 label_selector: str | None = None, backoff: Backoff | None = None,
                 watch_s: int = WATCH_S) -> None:
        super().__init__(name=f"watch-{kind}-{field_selector or label_selector}", daemon=True)
        self.kind, self.list_call, self.namespace, self.out = kind, list_call, namespace, out
        self.what, self.watch_s = what, watch_s
        self.selectors = {k: v for k, v in (("field_selector", field_selector),
                                            ("label_selector", label_selector)) if v}
        self.backoff = backoff or Backoff()
        self.requests = 0  # for tests and logs: how often the server was asked
        self._stopped = threading.Event()
        self._response: Any = None
        self._known: set[str] = set()

    def stop(self) -> None:
        """End the thread soon: it is waiting either in a backoff or on an open watch."""
        self._stopped.set()
        response = self._response
        if response is not None:
            try:
                response.shutdown()
            except (AttributeError, OSError):
                response.close()

    def run(self) -> None:
        version: str | None = None
        while not self._stopped.is_set():
            try:
                version = self._cycle(version)
            except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                if self._stopped.is_set():
                    return
                status = exc.status if isinstance(exc, ApiException) else None
                if status in FATAL_STATUSES:
                    self.out.put(Broken(self.kind, api_error(exc, what=self.what)))
                    return
                headers = exc.headers if isinstance(exc, ApiException) else None
                delay = self.backoff.next_delay(retry_after_s=retry_after_s(headers))
                if status == HTTP_GONE:
                    version = None  # list again: at once, unless the last relist was Gone too
                    delay = delay if self.backoff.failures > 1 else 0.0
                self._stopped.wait(delay)

    def _cycle(self, version: str | None) -> str:
        """List if there is no version yet, then watch once; the version to go on from."""
        if version is None:
            version = self._list()
        started = time.monotonic()
        version, events = self._watch(version)
        if events == 0 and time.monotonic() - started < MIN_HEALTHY_WATCH_S \
                and not self._stopped.is_set():
            raise ValueError("the watch ended at once")  # a server closing on us: back off
        self.backoff.reset()
        return version

    def _list(self) -> str:
        self.requests += 1
        response = self.list_call(self.namespace, _preload_content=False, _request_timeout=30,
                                  **self.selectors)
        try:
            listed = json.loads(response.data)
        finally:
            response.release_conn()
        seen = {_name(item) for item in listed.get("items") or []}
        for gone in self._known - seen:
            self.out.put(Change(self.kind, "DELETED", {"metadata": {"name": gone}}))
        for item in listed.get("items") or []:
            self.out.put(Change(self.kind, "ADDED", item))
        self._known = seen
        return (listed.get("metadata") or {}).get("resourceVersion") or "0"

    def _watch(self, version: str) -> tuple[str, int]:
        self.requests += 1
        self._response = response = self.list_call(
            self.namespace, watch=True, resource_version=version, allow_watch_bookmarks=True,
            timeout_seconds=self.watch_s, _request_timeout=(10, self.watch_s + 15),
            _preload_content=False, **self.selectors)
        events = 0
        try:
            for line in _lines(response):
                version = self._event(json.loads(line), version)
                events += 1
                if self._stopped.is_set():
                    break
        finally:
            self._response = None
            response.release_conn()
        return version, events

    def _event(self, event: dict[str, Any], version: str) -> str:
        change, obj = event.get("type"), event.get("object") or {}
        if change == "ERROR":  # a Status: 410 when our version was compacted away
            raise ApiException(status=obj.get("code"),
                               reason=f"{obj.get('reason')}: {obj.get('message')}")
        new_version = (obj.get("metadata") or {}).get("resourceVersion") or version
        if change in ("ADDED", "MODIFIED", "DELETED"):
            (self._known.discard if change == "DELETED" else self._known.add)(_name(obj))
            self.out.put(Change(self.kind, change, obj))
        return new_version


def _lines(response: Any) -> Any:
    buffer = b""
    for chunk in response.stream(4096, decode_content=True):
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        yield from (line for line in complete if line.strip())
    if buffer.strip():
        yield buffer


def _name(obj: dict[str, Any]) -> str:
    return (obj.get("metadata") or {}).get("name", "?")


class JobWatch:
    """A Job, its pods and the events on both, each kept by its own Reflector, into one queue.

    One thread per watch rather than short watches taken in turn: each kind then reaches
    the runner as soon as the API server sends it (a FailedCreate on the Job must not wait
    for a quiet pod watch to time out), and no watch is reopened more often than its
    `timeoutSeconds`. The threads only read and enqueue; every decision stays on the
    runner's thread. Events are selected by `involvedObject.name` (one field selector per
    object, since a field selector cannot say "the Job or any of its pods").
    """

    def __init__(self, api: KubeApi, job: str, *,
                 backoff: Callable[[], Backoff] = Backoff) -> None:
        self.api, self.job, self.backoff = api, job, backoff
        self.queue: queue.Queue[Change | Broken] = queue.Queue()
        self.reflectors: dict[str, Reflector] = {}
        self._add("Job", api.batch.list_namespaced_job, field_selector=f"metadata.name={job}",
                  what=f"watching Job {job} (needs jobs list/watch)")
        self._add("Pod", api.core.list_namespaced_pod, label_selector=f"job-name={job}",
                  what=f"watching pods of Job {job} (needs pods list/watch)")
        self.watch_events_of(job)

    def watch_events_of(self, name: str) -> None:
        """Also follow the events on `name` (each new pod of the Job); idempotent."""
        self._add("Event", self.api.core.list_namespaced_event,
                  field_selector=f"involvedObject.name={name}",
                  what=f"watching events of {name} (needs events list/watch)")

    def next(self, timeout_s: float) -> Change | Broken | None:
        try:
            return self.queue.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            return None

    def requests(self) -> int:
        return sum(r.requests for r in list(self.reflectors.values()))

    def __enter__(self) -> JobWatch:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        for reflector in list(self.reflectors.values()):
            reflector.stop()
        for reflector in list(self.reflectors.values()):
            reflector.join(STOP_JOIN_S)

    def _add(self, kind: str, list_call: Callable[..., Any], *, what: str,
             field_selector: str | None = None, label_selector: str | None = None) -> None:
        key = f"{kind}:{field_selector}:{label_selector}"
        if key in self.reflectors:
            return
        reflector = Reflector(kind=kind, list_call=list_call, namespace=self.api.namespace,
                              out=self.queue, what=what, field_selector=field_selector,
                              label_selector=label_selector, backoff=self.backoff())
        self.reflectors[key] = reflector
        reflector.start()
