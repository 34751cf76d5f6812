"""List + watch from the list's resourceVersion, relist on 410, back off on anything else.

The last tests run the real `kubernetes` client against a local server that refuses every
request (and a closed port) and count the requests: before this change a failing watch
was reopened at once, thousands of times a second.
"""

from __future__ import annotations

import json
import queue
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from multiarch.errors import ConfigurationError
from multiarch.runners.kubernetes.backoff import Backoff
from multiarch.runners.kubernetes.client import KubeApi
from multiarch.runners.kubernetes.logs import LogFollower, PodView
from multiarch.runners.kubernetes.reflector import Broken, Change, JobWatch, Reflector


class FakeResponse:
    def __init__(self, body: bytes) -> None:
        self.data = body

    def stream(self, amt: int, decode_content: bool = True) -> Iterator[bytes]:
        yield self.data

    def release_conn(self) -> None:
        pass


def listed(version: str, *names: str) -> FakeResponse:
    items = [{"metadata": {"name": n, "resourceVersion": version}} for n in names]
    return FakeResponse(json.dumps({"metadata": {"resourceVersion": version},
                                    "items": items}).encode())


def watched(*events: dict[str, Any]) -> FakeResponse:
    return FakeResponse(b"".join(json.dumps(e).encode() + b"\n" for e in events))


def modified(name: str, version: str) -> dict[str, Any]:
    return {"type": "MODIFIED", "object": {"metadata": {"name": name,
                                                        "resourceVersion": version}}}


GONE = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                    "message": "too old resource version: 5 (90)"}}


class Script:
    """A list call answering from a script, then holding the last watch open until stopped."""

    def __init__(self, *answers: FakeResponse | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []
        self.idle = threading.Event()

    def __call__(self, namespace: str, **kwargs: Any) -> FakeResponse:
        self.calls.append(kwargs)
        if not self.answers:
            self.idle.set()
            time.sleep(0.05)
            return watched()
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def run(script: Script, **kwargs: Any) -> tuple[Reflector, list[Change | Broken]]:
    out: queue.Queue[Change | Broken] = queue.Queue()
    reflector = Reflector(kind="Pod", list_call=script, namespace="multiarch", out=out,
                          what="watching pods of Job j (needs pods list/watch)",
                          label_selector="job-name=j", backoff=Backoff(draw=lambda: 0.0),
                          **kwargs)
    reflector.start()
    script.idle.wait(5)
    reflector.stop()
    reflector.join(5)
    items = []
    while not out.empty():
        items.append(out.get())
    return reflector, items


def test_watch_starts_from_the_lists_version_and_goes_on_from_the_last_event():
    script = Script(listed("5", "p"), watched(modified("p", "7"), modified("p", "9")),
                    watched(modified("p", "11")))
    _, items = run(script)
    versions = [(c.get("watch"), c.get("resource_version")) for c in script.calls[:3]]
    assert versions == [(None, None), (True, "5"), (True, "9")]
    assert [(i.type, i.obj["metadata"]["resourceVersion"]) for i in items] == [
        ("ADDED", "5"), ("MODIFIED", "7"), ("MODIFIED", "9"), ("MODIFIED", "11")]
    assert script.calls[1]["label_selector"] == "job-name=j"
    assert script.calls[1]["allow_watch_bookmarks"] is True


def test_gone_as_an_error_event_relists_and_reports_what_vanished():
    script = Script(listed("5", "p", "q"), watched(modified("p", "7"), GONE), listed("90", "p"),
                    watched(modified("p", "91")))
    _, items = run(script)
    assert [(c.get("watch"), c.get("resource_version")) for c in script.calls[:4]] == [
        (None, None), (True, "5"), (None, None), (True, "90")]
    assert ("DELETED", "q") in [(i.type, i.obj["metadata"]["name"]) for i in items]


def test_gone_as_a_status_relists_too():
    script = Script(listed("5"), ApiException(status=410, reason="Gone"), listed("90"),
                    watched(modified("p", "91")))
    _, items = run(script)
    assert [c.get("watch") for c in script.calls[:4]] == [None, True, None, True]
    assert items[-1].obj["metadata"]["resourceVersion"] == "91"


def test_forbidden_is_reported_once_with_the_permission_and_not_retried():
    script = Script(ApiException(status=403, reason="Forbidden"))
    out: queue.Queue[Change | Broken] = queue.Queue()
    reflector = Reflector(kind="Pod", list_call=script, namespace="multiarch", out=out,
                          what="watching pods of Job j (needs pods list/watch)")
    reflector.start()
    reflector.join(5)
    broken = out.get_nowait()
    assert isinstance(broken, Broken) and isinstance(broken.error, ConfigurationError)
    assert "needs pods list/watch" in str(broken.error) and "forbidden (403)" in str(broken.error)
    assert len(script.calls) == 1


class Refusing(BaseHTTPRequestHandler):
    """Answers every request with an error Status, counting them."""

    status = 500
    extra_headers: ClassVar[dict[str, str]] = {}
    hits = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        with Refusing.lock:
            type(self).hits += 1
        body = json.dumps({"kind": "Status", "code": self.status}).encode()
        self.send_response(self.status)
        for key, value in self.extra_headers.items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def refusing() -> Iterator[Callable[..., tuple[KubeApi, type[Refusing]]]]:
    servers: list[ThreadingHTTPServer] = []

    def start(status: int = 500, headers: dict[str, str] | None = None
              ) -> tuple[KubeApi, type[Refusing]]:
        handler = type("Handler", (Refusing,), {"status": status, "hits": 0,
                                               "extra_headers": headers or {}})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return api_at(f"http://127.0.0.1:{server.server_address[1]}"), handler

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def api_at(host: str) -> KubeApi:
    configuration = client.Configuration()
    configuration.host = host
    api_client = client.ApiClient(configuration)
    return KubeApi(api_client=api_client, batch=client.BatchV1Api(api_client),
                   core=client.CoreV1Api(api_client), namespace="multiarch")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seeded() -> Backoff:
    return Backoff(draw=random.Random(10).random)


def test_an_erroring_server_gets_a_handful_of_requests_in_two_seconds(refusing):
    api, handler = refusing(500)
    with JobWatch(api, "hello-x7k2p", backoff=seeded):  # the Job, its pods, their events
        time.sleep(2)
    assert 3 <= handler.hits <= 15  # before: thousands
    assert handler.hits / 3 <= 5


def test_retry_after_is_honoured(refusing):
    api, handler = refusing(429, {"Retry-After": "1"})
    out: queue.Queue[Change | Broken] = queue.Queue()
    reflector = Reflector(kind="Pod", list_call=api.core.list_namespaced_pod,
                          namespace="multiarch", out=out, what="watching pods",
                          backoff=Backoff(draw=lambda: 0.0))
    reflector.start()
    time.sleep(1.5)
    hits = handler.hits
    reflector.stop()
    assert hits == 2  # at 0 s and 1 s, though the jitter drew 0


def test_an_unreachable_server_gets_a_handful_of_requests_in_two_seconds():
    api = api_at(f"http://127.0.0.1:{closed_port()}")
    with JobWatch(api, "hello-x7k2p", backoff=seeded) as watch:
        time.sleep(2)
        assert 3 <= watch.requests() <= 15
    assert watch.next(0) is None  # connection refused is retried, not a verdict


def test_the_log_follower_backs_off_too(refusing):
    api, handler = refusing(500)
    follower = LogFollower(api, "p", ["build"], PodView(pod=running()), label="[linux/arm64]",
                           emit=lambda line: None, backoff=seeded())
    follower.start()
    time.sleep(2)
    follower.stop()
    follower.join(5)
    assert 1 <= handler.hits <= 6 and follower.requests == handler.hits  # before: 10 in 2 s


def running(container: str = "build") -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "status": {"phase": "Running", "containerStatuses": [
        {"name": container, "state": {"running": {"startedAt": "2026-11-29T08:00:00Z"}}}]}}


def test_the_log_follower_keeps_a_403_for_the_runner_and_stops(refusing):
    api, handler = refusing(403)
    follower = LogFollower(api, "p", ["build", "export"], PodView(pod=running()),
                           label="[linux/arm64]", emit=lambda line: None)
    follower.start()
    follower.join(5)
    assert not follower.is_alive() and handler.hits == 1
    assert isinstance(follower.error, ConfigurationError)
    assert "needs pods/log get" in str(follower.error)


def test_finishing_the_pod_ends_a_backoff_wait_at_once(refusing):
    api, _ = refusing(500)
    follower = LogFollower(api, "p", ["build"], PodView(pod=running()), label="[x]",
                           emit=lambda line: None, backoff=Backoff(initial_s=60, draw=lambda: 1))
    follower.start()
    time.sleep(0.3)  # one request failed; the follower now waits 60 s
    started = time.monotonic()
    follower.finish()
    assert time.monotonic() - started < 2 and not follower.is_alive()
