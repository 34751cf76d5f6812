"""The registry API client: credentials as skopeo finds them, challenges, answers, retries.

HTTP exchanges are served by an httpx MockTransport standing in for a registry with token
auth (our client's boundary); the real registry is exercised by tests/faults.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.registry import free_port
from multiarch.errors import ConfigurationError, TransientError
from multiarch.registry_api import (
    MANIFEST_ACCEPT,
    RegistryClient,
    RegistryRefusedError,
    RegistryTransientError,
    answer_text,
    check_push_access,
    credentials_for,
    parse_challenge,
    put_manifest,
    read_manifest,
    retrying,
)

INDEX = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}'
INDEX_DIGEST = "sha256:" + __import__("hashlib").sha256(INDEX).hexdigest()


def auth_file(tmp_path: Path, key: str, user: str = "ci", password: str = "s3:cret") -> Path:
    path = tmp_path / "auth.json"
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {key: {"auth": token}}}))
    return path


@pytest.mark.parametrize("key", ["registry.example.com:5000", "https://registry.example.com:5000",
                                 "registry.example.com:5000/v2/"])
def test_credentials_match_the_registry_host_in_any_spelling(tmp_path, key):
    files = [tmp_path / "missing.json", auth_file(tmp_path, key)]
    assert credentials_for("registry.example.com:5000", files) == ("ci", "s3:cret")
    assert credentials_for("other.example.com", files) is None


def test_a_bearer_challenge_is_parsed():
    header = 'Bearer realm="https://auth.example.com/token",service="registry",scope="x:y:pull"'
    assert parse_challenge(header) == (
        "bearer", {"realm": "https://auth.example.com/token", "service": "registry",
                   "scope": "x:y:pull"})


def test_an_answer_is_one_line_with_status_and_registry_error_code():
    response = httpx.Response(503, json={"errors": [{"code": "UNAVAILABLE",
                                                     "message": "service\nunavailable"}]})
    assert answer_text(response) == "503 UNAVAILABLE: service unavailable"
    assert answer_text(httpx.Response(502, text="<html>bad</html>")) == "502 Bad Gateway"


def transient(status: int) -> RegistryTransientError:
    return RegistryTransientError(f"PUT x: {status}", status)


def answering(*answers: object):
    """A call that raises or returns each answer in turn."""
    pending = list(answers)

    def call() -> object:
        answer = pending.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return call


def test_transient_answers_are_retried_with_growing_pauses():
    pauses: list[float] = []
    call = answering(transient(503), transient(429), "done")
    assert retrying(call, sleep=pauses.append) == "done"
    assert pauses == [0.5, 1.0]


def test_retries_are_bounded_and_the_last_transient_error_is_raised():
    pauses: list[float] = []

    def call() -> None:
        raise transient(503)

    with pytest.raises(RegistryTransientError, match="503"):
        retrying(call, sleep=pauses.append)
    assert pauses == [0.5, 1.0, 2.0]


def test_a_500_is_retried_once_and_a_second_one_is_permanent():
    pauses: list[float] = []

    def call() -> None:
        raise transient(500)

    with pytest.raises(RegistryRefusedError, match="twice"):
        retrying(call, sleep=pauses.append)
    assert pauses == [0.5]


def test_a_permanent_answer_is_not_retried():
    calls = []

    def call() -> None:
        calls.append(1)
        raise RegistryRefusedError("PUT x: 400 MANIFEST_INVALID: bad", 400)

    with pytest.raises(RegistryRefusedError):
        retrying(call, sleep=lambda _: None)
    assert calls == [1]


class TokenRegistry:
    """A registry behind token auth, as httpx handlers: what a real v2 exchange looks like."""

    def __init__(self) -> None:
        self.tags: dict[str, tuple[bytes, str]] = {}
        self.token_requests: list[httpx.Request] = []
        self.fail_puts: list[int] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            self.token_requests.append(request)
            return httpx.Response(200, json={"token": "T0K"})
        if request.headers.get("authorization") != "Bearer T0K":
            actions = "pull" if request.method == "GET" else "pull,push"
            challenge = ('Bearer realm="https://reg.example/token",service="reg.example",'
                         f'scope="repository:team/app:{actions}"')
            return httpx.Response(401, headers={"WWW-Authenticate": challenge},
                                  json={"errors": [{"code": "UNAUTHORIZED", "message": "no"}]})
        tag = request.url.path.rsplit("/", 1)[1]
        if request.method == "PUT":
            if self.fail_puts:
                status = self.fail_puts.pop(0)
                return httpx.Response(status, json={"errors": [{"code": "UNAVAILABLE",
                                                               "message": "try later"}]})
            self.tags[tag] = (request.content, request.headers["content-type"])
            return httpx.Response(201, headers={"Docker-Content-Digest": INDEX_DIGEST})
        if tag not in self.tags:
            return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN",
                                                         "message": "manifest unknown"}]})
        assert request.headers["accept"] == MANIFEST_ACCEPT
        body, media_type = self.tags[tag]
        return httpx.Response(200, content=body, headers={"Content-Type": media_type})


@pytest.fixture
def token_registry(tmp_path) -> tuple[RegistryClient, TokenRegistry]:
    registry = TokenRegistry()
    client = RegistryClient(registry="reg.example", insecure=False,
                            auth_files=[auth_file(tmp_path, "reg.example")])
    client._http = httpx.Client(transport=httpx.MockTransport(registry))
    return client, registry


def test_token_auth_uses_the_auth_files_credentials_and_the_push_scope(token_registry):
    client, registry = token_registry
    assert read_manifest(client, "team/app", "v1") is None
    assert put_manifest(client, "team/app", "v1", body=INDEX,
                        media_type="application/vnd.oci.image.index.v1+json") == INDEX_DIGEST
    served = read_manifest(client, "team/app", "v1")
    assert served is not None
    assert (served.digest, served.body) == (INDEX_DIGEST, INDEX)
    assert served.media_type == "application/vnd.oci.image.index.v1+json"
    token_request = registry.token_requests[-1]
    assert token_request.url.params["scope"] == "repository:team/app:pull,push"
    assert token_request.url.params["service"] == "reg.example"
    assert token_request.headers["authorization"] == "Basic " + base64.b64encode(
        b"ci:s3:cret").decode()


def test_a_503_on_a_put_is_transient_and_says_who_answered_what(token_registry):
    client, registry = token_registry
    registry.fail_puts = [503]
    with pytest.raises(RegistryTransientError) as caught:
        put_manifest(client, "team/app", "v1", body=INDEX,
                     media_type="application/vnd.oci.image.index.v1+json")
    assert str(caught.value) == (
        "PUT reg.example/v2/team/app/manifests/v1: 503 UNAVAILABLE: try later")
    assert caught.value.status == 503


def test_without_credentials_a_challenge_names_the_auth_files(tmp_path):
    def basic_only(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    client = RegistryClient(registry="reg.example", insecure=False,
                            auth_files=[tmp_path / "none.json"])
    client._http = httpx.Client(transport=httpx.MockTransport(basic_only))
    with pytest.raises(RegistryRefusedError, match=r"no credentials for reg.example in .*none"):
        read_manifest(client, "team/app", "v1")


def test_push_check_of_an_unreachable_registry_is_a_configuration_error():
    port = free_port()  # nothing listens there
    with pytest.raises(ConfigurationError, match=f"127.0.0.1:{port} is unreachable"):
        check_push_access(f"127.0.0.1:{port}/team/app:1", insecure=True)


def test_registry_errors_survive_pickling_with_their_status():
    import pickle

    error = pickle.loads(pickle.dumps(RegistryTransientError("PUT x: 503", 503)))
    assert (str(error), error.status, isinstance(error, TransientError)) == ("PUT x: 503", 503,
                                                                             True)


def test_a_retry_after_lengthens_the_pause_to_what_the_registry_asked():
    pauses: list[float] = []
    call = answering(RegistryTransientError("GET x: 429", 429, retry_after=7.0), "done")
    assert retrying(call, sleep=pauses.append) == "done"
    assert pauses == [7.0]


def test_a_retry_after_longer_than_a_minute_is_the_registrys_answer():
    pauses: list[float] = []

    def call() -> None:
        raise RegistryTransientError("GET x: 429", 429, retry_after=3600.0)

    with pytest.raises(RegistryTransientError, match="asks to wait 3600 s"):
        retrying(call, sleep=pauses.append)
    assert pauses == []


@pytest.mark.parametrize(("header", "seconds"), [("12", 12.0), ("Wed, 21 Oct 2015 07:28:00 GMT",
                                                                0.0), ("soon", None)])
def test_a_429s_retry_after_is_read_as_seconds_or_a_date(token_registry, header, seconds):
    client, _ = token_registry

    def limited(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": header},
                              json={"errors": [{"code": "TOOMANYREQUESTS", "message": "slow"}]})

    client._http = httpx.Client(transport=httpx.MockTransport(limited))
    with pytest.raises(RegistryTransientError) as caught:
        read_manifest(client, "team/app", "v1")
    assert caught.value.retry_after == seconds


def test_a_token_without_the_scope_names_the_repository_and_the_scope(tmp_path):
    """A second 401 after a fresh token: the token server granted less than asked."""
    def stingy(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            return httpx.Response(200, json={"token": "PULL-ONLY"})
        challenge = ('Bearer realm="https://reg.example/token",service="reg.example",'
                     'scope="repository:other/app:pull,push",error="insufficient_scope"')
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    client = RegistryClient(registry="reg.example", insecure=False,
                            auth_files=[auth_file(tmp_path, "reg.example")])
    client._http = httpx.Client(transport=httpx.MockTransport(stingy))
    with pytest.raises(RegistryRefusedError) as caught:
        put_manifest(client, "other/app", "v1", body=INDEX,
                     media_type="application/vnd.oci.image.index.v1+json")
    message = str(caught.value)
    assert "insufficient_scope" in message
    assert "not granted pull,push on repository other/app" in message
    assert "\n" not in message


@pytest.fixture
def plain_http_v2() -> Iterator[str]:
    """A plain-HTTP server on 127.0.0.1 answering /v2/ as an open registry does."""
    import http.server
    import threading

    class V2(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), V2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_plain_http_loopback_registry_needs_insecure_as_skopeo_does(plain_http_v2):
    # skopeo refuses http on 127.0.0.1 without --tls-verify=false: a build must not pass
    # its checks on our client and then fail in skopeo's push
    strict = RegistryClient(registry=plain_http_v2, insecure=False, auth_files=[])
    assert strict.scheme() == "https"
    with pytest.raises(RegistryTransientError, match="https://"):
        strict.request("GET", "/v2/", scope="")
    strict.close()
    insecure = RegistryClient(registry=plain_http_v2, insecure=True, auth_files=[])
    assert insecure.request("GET", "/v2/", scope="").status_code == 200
    insecure.close()
    # `multiarch verify` reads alone, and lets a loopback registry answer plain HTTP
    reader = RegistryClient(registry=plain_http_v2, insecure=False, auth_files=[],
                            plain_http_loopback=True)
    assert reader.scheme() == "http"
    assert reader.request("GET", "/v2/", scope="").status_code == 200
    reader.close()
