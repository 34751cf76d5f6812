"""Each step's log, streamed in step order while the pod runs, and the latest pod object
shared between the watch loop and the log follower."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes.client.rest import ApiException

from multiarch.errors import MultiarchError
from multiarch.process import TAIL_LINES
from multiarch.retry_after import retry_after_s
from multiarch.runners.kubernetes.backoff import Backoff
from multiarch.runners.kubernetes.client import KubeApi, api_error

Emit = Callable[[str], None]
LOG_JOIN_TIMEOUT_S = 30


@dataclass
class PodView:
    """The latest pod object, shared between the watch loop and the log follower."""

    pod: dict[str, Any] | None = None
    finished: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def update(self, pod: dict[str, Any]) -> None:
        with self.lock:
            self.pod = pod

    def container_state(self, name: str) -> dict[str, Any]:
        with self.lock:
            status = (self.pod or {}).get("status") or {}
        for key in ("initContainerStatuses", "containerStatuses"):
            for entry in status.get(key) or []:
                if entry.get("name") == name:
                    return entry.get("state") or {}
        return {}


class LogFollower(threading.Thread):
    """Streams each step's log in step order; resumes a dropped stream without repeats.

    The log of a container only grows, so after a drop we ask again from the start and
    skip the lines already passed on (the API's `sinceTime` is second-granular and would
    repeat or lose lines). Reconnects back off (exponential, jittered, `Retry-After`
    honoured) unless the last stream brought new lines. A 401/403 is not retried: it is
    kept in `error` for the runner to raise, with the permission (pods/log get) named.
    """

    def __init__(self, api: KubeApi, pod: str, steps: list[str], view: PodView, *,
                 label: str, emit: Emit, backoff: Backoff | None = None) -> None:
        super().__init__(name=f"logs-{pod}", daemon=True)
        self.api, self.pod, self.steps, self.view = api, pod, steps, view
        self.label, self.emit = label, emit
        self.backoff = backoff or Backoff()
        self.error: MultiarchError | None = None
        self.requests = 0
        self._tails: dict[str, deque[str]] = {s: deque(maxlen=TAIL_LINES) for s in steps}
        self._stop_now = threading.Event()
        self._wake = threading.Event()  # ends a backoff wait early: the pod is done or stop

    def run(self) -> None:
        for step in self.steps:
            if not self._wait_started(step):
                return
            self.emit(f"{self.label} step {step} on {self.pod}")
            self._stream(step)
            if self.error is not None:
                return

    def finish(self) -> None:
        """The pod is done: let the follower drain what is left, then wait for it."""
        self.view.finished.set()
        self._wake.set()
        self.join(LOG_JOIN_TIMEOUT_S)

    def stop(self) -> None:
        self._stop_now.set()
        self.view.finished.set()
        self._wake.set()

    def tail(self, step: str | None = None) -> list[str]:
        if step is not None and step in self._tails:
            return list(self._tails[step])
        return [line for s in self.steps for line in self._tails[s]]

    def _wait_started(self, step: str) -> bool:
        while not self._stop_now.is_set():
            state = self.view.container_state(step)
            if "running" in state or "terminated" in state:
                return True
            if self.view.finished.is_set():
                return False
            time.sleep(0.1)
        return False

    def _stream(self, step: str) -> None:
        passed = 0
        while not self._stop_now.is_set():
            done = "terminated" in self.view.container_state(step) or self.view.finished.is_set()
            before, retry_after = passed, None
            try:
                for index, line in enumerate(self._lines(step, follow=not done)):
                    if index >= passed:
                        self._tails[step].append(line)
                        self.emit(f"{self.label} [{step}] {line}")
                        passed += 1
            except ApiException as exc:
                if exc.status in (401, 403):
                    self.error = api_error(exc, what=f"{self.label} streaming the log of "
                                                     f"{self.pod} (needs pods/log get)")
                    return
                retry_after = retry_after_s(exc.headers)
            except (urllib3.exceptions.HTTPError, OSError):
                pass  # a dropped stream: ask again, skipping what was passed on
            if done:
                return
            if passed > before:
                self.backoff.reset()
            self._wake.wait(self.backoff.next_delay(retry_after_s=retry_after))

    def _lines(self, step: str, *, follow: bool) -> Iterator[str]:
        self.requests += 1
        response = self.api.core.read_namespaced_pod_log(
            self.pod, self.api.namespace, container=step, follow=follow,
            _preload_content=False, _request_timeout=(30, 3600),
        )
        buffer = b""
        try:
            for chunk in response.stream(4096, decode_content=True):
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for raw in complete:
                    yield raw.decode("utf-8", errors="replace")
            if buffer:
                yield buffer.decode("utf-8", errors="replace")
        finally:
            response.release_conn()


