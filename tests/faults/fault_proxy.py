"""A real HTTP reverse proxy in front of a registry that fails on command.

Each test programs rules: a method and a path pattern, which matches to act on (the Nth,
the first N, or all), and what to do: answer a registry-style error (503/500/429 with a
JSON `errors` body), reset the connection (optionally after part of the request body, as
a broken blob upload), wait before forwarding, or call a hook (restart the registry).
Everything else is forwarded byte for byte, bodies streamed in both directions (blob
PATCHes and PUTs of any size, chunked or not), so skopeo and our client see a registry.

One request per connection (`Connection: close` on every answer) keeps the relay simple;
registry clients reconnect as they should.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 64 * 1024
UPSTREAM_TIMEOUT_S = 120
# registry error codes (distribution spec, "Error Codes"), by status
ERROR_CODES = {429: "TOOMANYREQUESTS", 500: "UNKNOWN", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
               504: "UNAVAILABLE"}


@dataclass(frozen=True)
class Answer:
    """Answer with this status and a registry-style error body; the request goes nowhere."""

    status: int
    message: str = "injected by the fault proxy"


@dataclass(frozen=True)
class Reset:
    """Reset the connection (RST), after reading `after_bytes` of the request body."""

    after_bytes: int = 0


@dataclass(frozen=True)
class Delay:
    """Wait, then forward: a slow registry."""

    seconds: float


@dataclass(frozen=True)
class Hook:
    """Call a function, then forward (the registry may be gone: then the answer is 502)."""

    call: Callable[[], None]


Action = Answer | Reset | Delay | Hook


@dataclass
class Rule:
    """Act on matching requests: the `nth` match only, the first `times`, or all of them."""

    method: str
    path: str  # a regular expression searched in the request path (with query)
    action: Action
    nth: int | None = None
    times: int | None = None
    matched: int = 0
    applied: int = 0

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and re.search(self.path, path) is not None

    def fires(self) -> bool:
        """Count one match; True if this match is one to act on."""
        self.matched += 1
        if self.nth is not None:
            hit = self.matched == self.nth
        elif self.times is not None:
            hit = self.matched <= self.times
        else:
            hit = True
        self.applied += hit
        return hit


@dataclass
class FaultProxy:
    """The proxy: `address` goes where the registry address would."""

    upstream: str  # host:port of the real registry
    rules: list[Rule] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)  # "METHOD path -> what happened"
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def address(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def add(self, method: str, path: str, action: Action, *, nth: int | None = None,
            times: int | None = None) -> Rule:
        rule = Rule(method=method, path=path, action=action, nth=nth, times=times)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def action_for(self, method: str, path: str) -> Action | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path) and rule.fires():
                    return rule.action
        return None

    def note(self, line: str) -> None:
        with self._lock:
            self.seen.append(line)

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _ProxyHandler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # the test reads `owner.seen` instead

    def handle(self) -> None:
        # A TLS ClientHello (an https probe of an insecure registry) is not HTTP: drop it
        # the way a plain-http registry fails it, instead of waiting for a request line.
        with contextlib.suppress(OSError):
            if self.connection.recv(1, socket.MSG_PEEK) == b"\x16":
                return
        super().handle()

    def handle_one_request(self) -> None:
        self.close_connection = True
        super().handle_one_request()

    def relay(self) -> None:
        action = self.owner.action_for(self.command, self.path)
        if isinstance(action, Answer):
            self._drain_body()
            self._answer(action.status, action.message)
        elif isinstance(action, Reset):
            self._read_body_bytes(action.after_bytes)
            self._reset()
        else:
            if isinstance(action, Delay):
                time.sleep(action.seconds)
            elif isinstance(action, Hook):
                action.call()
            self._forward()
            return
        self.owner.note(f"{self.command} {self.path} -> {action}")

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = relay

    def _forward(self) -> None:
        host, port = self.owner.upstream.rsplit(":", 1)
        upstream = http.client.HTTPConnection(host, int(port), timeout=UPSTREAM_TIMEOUT_S)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True,
                                skip_accept_encoding=True)
            for key, value in self.headers.items():
                if key.lower() != "connection":
                    upstream.putheader(key, value)
            upstream.putheader("Connection", "close")
            upstream.endheaders()
            self._stream_body(upstream.send)
            response = upstream.getresponse()
        except OSError as exc:
            self._drain_body()
            self.owner.note(f"{self.command} {self.path} -> upstream down: {exc}")
            self._answer(502, f"registry unreachable: {exc}")
            return
        self.owner.note(f"{self.command} {self.path} -> {response.status}")
        self._relay_response(response)
        upstream.close()

    def _relay_response(self, response: http.client.HTTPResponse) -> None:
        self.send_response_only(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in ("connection", "transfer-encoding"):
                self.send_header(key, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        while chunk := response.read1(CHUNK):
            self.wfile.write(chunk)
        self.wfile.flush()

    def _answer(self, status: int, message: str) -> None:
        code = ERROR_CODES.get(status, "UNKNOWN")
        body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        if status == 429:
            self.send_header("Retry-After", "1")
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _reset(self) -> None:
        """Close with RST (SO_LINGER 0): the client sees `connection reset by peer`."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def _drain_body(self) -> None:
        self._stream_body(lambda _: None)

    def _read_body_bytes(self, limit: int) -> None:
        taken = 0

        def count(data: bytes) -> None:
            nonlocal taken
            taken += len(data)
            if taken >= limit:
                raise _Enough

        with contextlib.suppress(_Enough):
            if limit > 0:
                self._stream_body(count)

    def _stream_body(self, send: Callable[[bytes], object]) -> None:
        """Pass the request body on as it arrives: raw chunked framing, or Content-Length."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._stream_chunked(send)
            return
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            data = self.rfile.read(min(CHUNK, left))
            if not data:
                break
            send(data)
            left -= len(data)

    def _stream_chunked(self, send: Callable[[bytes], object]) -> None:
        while True:
            size_line = self.rfile.readline()
            send(size_line)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, up to the empty line
                    trailer = self.rfile.readline()
                    send(trailer)
                    if trailer in (b"\r\n", b"\n", b""):
                        return
            left = size + 2  # the chunk and its CRLF
            while left > 0:
                data = self.rfile.read(min(CHUNK, left))
                if not data:
                    return
                send(data)
                left -= len(data)


class _Enough(Exception):
    """Enough of the body was read before a reset."""
