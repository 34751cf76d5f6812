"""The few Registry HTTP API v2 calls that skopeo cannot make: exact manifest PUTs and DELETEs.

Tags are written by PUTting the exact bytes of the index that skopeo already pushed by
digest, so nothing is re-uploaded and the digest cannot change on the way. A failed tag
write must be undone, which needs the bytes a tag held before (a GET) and, for a tag
that did not exist, a DELETE. skopeo has no command for either, so this module speaks the
API itself, with the same credentials skopeo uses (containers auth.json, Docker config)
and the same scheme rule for insecure registries (https first, then plain http).

Every failure is one line naming the call, the registry's status and its error code, and
is raised as transient (429, 500, 502-504, connection trouble) or permanent.
"""

from __future__ import annotations

import base64
import contextlib
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

from multiarch.errors import ConfigurationError, PublishError, TransientError
from multiarch.failures import is_transient_message
from multiarch.ocispec import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_INDEX,
    MEDIA_TYPE_MANIFEST,
    sha256_digest,
)
from multiarch.references import ImageReference
from multiarch.registry_access import (
    auth_file_candidates,
    cert_dir,
    certs_dirs,
    credentials_for,
    is_loopback,
    ssl_context,
)
from multiarch.retry_after import retry_after_s

# distribution spec, "Pulling manifests": the client lists every type it understands.
MANIFEST_ACCEPT = ", ".join((MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, DOCKER_MANIFEST_LIST,
                             DOCKER_MANIFEST))
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
REQUEST_TIMEOUT_S = 30.0
RETRY_DELAYS_S = (0.5, 1.0, 2.0)  # four attempts, 3.5 s of pauses at most
MAX_RETRY_AFTER_S = 60.0  # a registry asking for a longer pause is answered with a failure
T = TypeVar("T")
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryTransientError(TransientError):
    """The registry or the network failed in a way that may pass (503, reset, timeout);
    `retry_after`: the pause the registry asked for (429/503 `Retry-After`), in seconds."""

    def __init__(self, message: str, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.status, self.retry_after))


class RegistryUnreachableError(RegistryTransientError):
    """Nothing answered: refused connection, unknown host, TLS that never completed."""


class RegistryRefusedError(PublishError):
    """The registry answered, and retrying will get the same answer (400, 401, 404...)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.status))


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """A manifest as the registry serves it: its digest is the sha256 of these bytes."""

    digest: str
    media_type: str
    body: bytes


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="..."` -> ("bearer", {"realm": ..., "service": ...})."""
    scheme, _, params = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(params))


def answer_text(response: httpx.Response) -> str:
    """`503 UNAVAILABLE: service unavailable`: the status and the registry's own error."""
    text = f"{response.status_code} {response.reason_phrase}".strip()
    try:
        errors = response.json().get("errors") or []
    except ValueError:
        errors = []
    if errors:
        first = errors[0]
        text = f"{response.status_code} {first.get('code', '')}: {first.get('message', '')}"
    return " ".join(text.split())


def is_transient_answer(status: int, text: str) -> bool:
    return status in TRANSIENT_STATUSES or is_transient_message(text)


@dataclass(kw_only=True)
class RegistryClient:
    """One registry: the scheme it speaks, its trust and credentials, tokens per scope.

    Trust and credentials come from multiarch.registry_access, the places skopeo reads.
    `insecure`: TLS unverified, and plain HTTP when https does not answer. Builds and
    publishes never fall back to plain HTTP without it, because skopeo and buildah, which
    push the same image, would not. `plain_http_loopback` (for `multiarch verify`, which
    reads alone, as crane and regctl do) lets 127.0.0.1/localhost answer in plain HTTP; an
    https one is still verified.
    """

    registry: str
    insecure: bool
    plain_http_loopback: bool = False
    auth_files: list[Path] = field(default_factory=auth_file_candidates)
    timeout_s: float = REQUEST_TIMEOUT_S
    _http: httpx.Client | None = None
    _scheme: str | None = None
    _auth_headers: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            verify = False if self.insecure else ssl_context(self.registry)
            # trust_env=False: a proxy from the environment must not see registry traffic.
            self._http = httpx.Client(verify=verify, timeout=self.timeout_s, trust_env=False)
        return self._http

    def request(self, method: str, path: str, *, scope: str, **kwargs: object) -> httpx.Response:
        """Send one call, answering an auth challenge once; transport failures are raised."""
        url = f"{self.scheme()}://{self.registry}{path}" if path.startswith("/") else path
        what = f"{method} {url}"
        response = self._send(method, url, scope=scope, what=what, **kwargs)
        if response.status_code == 401 and "www-authenticate" in response.headers:
            self._auth_headers[scope] = self._authorise(response, scope=scope, what=what)
            response = self._send(method, url, scope=scope, what=what, **kwargs)
            if response.status_code == 401:
                raise self._not_granted(response, scope=scope, what=what)
        return response

    def scheme(self) -> str:
        """https; for an insecure (or a permitted loopback) registry whatever /v2/ answers
        on: https, then plain http when nothing speaks TLS there (never when a certificate
        fails)."""
        loopback = self.plain_http_loopback and is_loopback(self.registry)
        if self._scheme is None and not (self.insecure or loopback):
            self._scheme = "https"
        if self._scheme is None:
            try:
                self.http.get(f"https://{self.registry}/v2/")
                self._scheme = "https"
            except httpx.TransportError as exc:
                text = str(exc)
                if "refused" in text.lower():
                    return "http"  # nothing listens (a restart?): probe again next time
                self._scheme = "https" if "CERTIFICATE_VERIFY_FAILED" in text else "http"
        return self._scheme

    def _send(self, method: str, url: str, *, scope: str, what: str,
              **kwargs: object) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})  # type: ignore[call-overload]
        if scope in self._auth_headers:
            headers["Authorization"] = self._auth_headers[scope]
        try:
            return self.http.request(method, url, headers=headers, **kwargs)  # type: ignore[arg-type]
        except httpx.TimeoutException as exc:
            raise RegistryTransientError(f"{what}: timed out ({exc})") from exc
        except httpx.ConnectError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise self._untrusted(what, exc) from exc
            if _CLIENT_CERT_ALERTS.search(str(exc)):
                raise self._no_client_certificate(what, exc) from exc
            raise RegistryUnreachableError(f"{what}: cannot connect: {exc}") from exc
        except httpx.TransportError as exc:
            if _CLIENT_CERT_ALERTS.search(str(exc)):
                raise self._no_client_certificate(what, exc) from exc
            raise RegistryTransientError(f"{what}: {type(exc).__name__}: {exc}") from exc

    def _authorise(self, response: httpx.Response, *, scope: str, what: str) -> str:
        kind, params = parse_challenge(response.headers["www-authenticate"])
        credentials = credentials_for(self.registry, self.auth_files,
                                      repository=_repository_of(scope))
        if kind == "basic":
            if credentials is None:
                raise self._no_credentials(what)
            return "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
        if kind != "bearer" or "realm" not in params:
            raise RegistryRefusedError(f"{what}: unsupported auth challenge {kind!r}", 401)
        # the challenge names what this call needs (a DELETE needs `delete`): ask for that
        query = {"service": params.get("service", ""), "scope": params.get("scope") or scope}
        try:
            answer = self.http.get(params["realm"], params=query,
                                   auth=credentials)  # type: ignore[arg-type]
        except httpx.TransportError as exc:
            raise RegistryTransientError(f"{what}: token request failed: {exc}") from exc
        if answer.status_code == 401 and credentials is None:
            raise self._no_credentials(what)
        if answer.status_code != 200:
            raise failure(f"{what}: token request to {params['realm']}", answer)
        body = answer.json()
        return "Bearer " + (body.get("token") or body.get("access_token", ""))

    def _not_granted(self, response: httpx.Response, *, scope: str,
                     what: str) -> RegistryRefusedError:
        """A second 401, with fresh credentials or token: they do not cover this call."""
        _, params = parse_challenge(response.headers.get("www-authenticate", ""))
        scope = params.get("scope") or scope
        repository = _repository_of(scope) or "this registry"
        actions = scope.rsplit(":", 1)[-1]
        return RegistryRefusedError(
            f"{what}: 401 {params.get('error') or 'unauthorized'}: the credentials for "
            f"{self.registry} are not granted {actions} on repository {repository} "
            f"(scope {scope}): ask for that access, or log in as a user who has it", 401)

    def _no_credentials(self, what: str) -> RegistryRefusedError:
        places = ", ".join(str(p) for p in self.auth_files)
        return RegistryRefusedError(
            f"{what}: 401 UNAUTHORIZED and no credentials for {self.registry} in {places}: "
            f"log in with `skopeo login {self.registry}`", 401)

    def _no_client_certificate(self, what: str, exc: Exception) -> RegistryRefusedError:
        """A registry that wants mutual TLS turned our client certificate (or its absence)
        down; with TLS 1.3 that alert comes on the first read, after the handshake."""
        where = cert_dir(self.registry) or certs_dirs()[1] / self.registry
        return RegistryRefusedError(
            f"{what}: {self.registry} refused our TLS client certificate ({exc}): put the "
            f"certificate it accepts and its key in {where}/client.cert and client.key")

    def _untrusted(self, what: str, exc: Exception) -> RegistryRefusedError:
        where = cert_dir(self.registry) or certs_dirs()[1] / self.registry
        return RegistryRefusedError(
            f"{what}: the TLS certificate of {self.registry} is not trusted ({exc}): put the "
            f"CA that signed it in {where}/ca.crt (skopeo and buildah read it there too)")


# TLS alerts a server sends when it rejects the client's certificate (RFC 8446 6.2).
_CLIENT_CERT_ALERTS = re.compile(r"ALERT_(BAD_CERTIFICATE|CERTIFICATE_REQUIRED|UNKNOWN_CA|"
                                 r"CERTIFICATE_UNKNOWN|UNSUPPORTED_CERTIFICATE)")


def _repository_of(scope: str) -> str | None:
    """`repository:team/app:pull,push` -> `team/app`."""
    kind, _, rest = scope.partition(":")
    return rest.rsplit(":", 1)[0] if kind == "repository" and rest else None


def failure(what: str, response: httpx.Response) -> RegistryTransientError | RegistryRefusedError:
    """The exception for a registry answer that was not the one asked for."""
    text = answer_text(response)
    if is_transient_answer(response.status_code, text):
        return RegistryTransientError(f"{what}: {text}", response.status_code,
                                      retry_after_s(response.headers))
    return RegistryRefusedError(f"{what}: {text}", response.status_code)


@contextmanager
def registry_client(registry: str, *, insecure: bool,
                    plain_http_loopback: bool = False) -> Iterator[RegistryClient]:
    client = RegistryClient(registry=registry, insecure=insecure,
                            plain_http_loopback=plain_http_loopback)
    try:
        yield client
    finally:
        client.close()


def retrying(call: Callable[[], T], *, delays: Sequence[float] | None = None,
             sleep: Callable[[float], None] = time.sleep) -> T:
    """Call, retrying transient registry failures with growing pauses (bounded in total).

    A 500 may be a registry's passing hiccup, but one that repeats is its answer: the
    second 500 is raised as permanent. A `Retry-After` (429, 503) lengthens the pause to
    what the registry asked, up to MAX_RETRY_AFTER_S; a longer request is its answer.
    """
    seen_500 = False
    for delay in (*(RETRY_DELAYS_S if delays is None else delays), None):
        try:
            return call()
        except RegistryTransientError as exc:
            if exc.status == 500 and seen_500:
                raise RegistryRefusedError(f"{exc} (twice)", 500) from exc
            if delay is None:
                raise
            asked = exc.retry_after or 0.0
            if asked > MAX_RETRY_AFTER_S:
                raise RegistryTransientError(
                    f"{exc} (the registry asks to wait {asked:.0f} s)", exc.status,
                    asked) from exc
            seen_500 = seen_500 or exc.status == 500
            sleep(max(delay, asked))
    raise AssertionError("unreachable")  # pragma: no cover


def _scope(repository: str, actions: str) -> str:
    return f"repository:{repository}:{actions}"


def read_manifest(client: RegistryClient, repository: str, reference: str) -> Manifest | None:
    """What a tag (or digest) holds now: exact bytes and type, or None when it does not exist."""
    path = f"/v2/{repository}/manifests/{reference}"
    response = client.request("GET", path, scope=_scope(repository, "pull"),
                              headers={"Accept": MANIFEST_ACCEPT})
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise failure(f"GET {client.registry}{path}", response)
    media_type = response.headers.get("content-type", "").split(";")[0].strip()
    return Manifest(digest=sha256_digest(response.content), media_type=media_type,
                    body=response.content)


def read_blob(client: RegistryClient, repository: str, digest: str) -> bytes:
    """A blob's bytes (an image config), checked against its digest."""
    path = f"/v2/{repository}/blobs/{digest}"
    response = client.request("GET", path, scope=_scope(repository, "pull"),
                              follow_redirects=True)
    if response.status_code != 200:
        raise failure(f"GET {client.registry}{path}", response)
    if sha256_digest(response.content) != digest:
        raise PublishError(f"GET {client.registry}{path}: the bytes do not match the digest")
    return response.content


def put_manifest(client: RegistryClient, repository: str, reference: str, *, body: bytes,
                 media_type: str) -> str:
    """Store these exact bytes under a tag; returns the digest the registry reports."""
    path = f"/v2/{repository}/manifests/{reference}"
    response = client.request("PUT", path, scope=_scope(repository, "pull,push"),
                              content=body, headers={"Content-Type": media_type})
    if response.status_code not in (200, 201):
        raise failure(f"PUT {client.registry}{path}", response)
    return response.headers.get("docker-content-digest") or sha256_digest(body)


def delete_manifest(client: RegistryClient, repository: str, reference: str) -> None:
    """DELETE a tag or a digest. Deleting a digest untags every tag that holds it.

    distribution 2.8 refuses a tag (400 DIGEST_INVALID); it deletes digests only when the
    registry enables deletion (405 UNSUPPORTED otherwise).
    """
    path = f"/v2/{repository}/manifests/{reference}"
    response = client.request("DELETE", path, scope=_scope(repository, "delete"))
    if response.status_code not in (200, 202, 404):
        raise failure(f"DELETE {client.registry}{path}", response)


def check_push_access(image_ref: ImageReference | str, insecure: bool) -> None:
    """Prove, before any build, that the registry answers and lets these credentials push.

    Opens a blob upload session (what every push starts with) and cancels it: nothing is
    stored. ConfigurationError for unreachable or refused; TransientError for 5xx/timeouts.
    """
    image = ImageReference.model_validate(image_ref)
    with registry_client(image.registry, insecure=insecure) as client:
        path = f"/v2/{image.repository}/blobs/uploads/"
        what = f"push check POST {image.registry}{path}"
        try:
            response = client.request("POST", path, scope=_scope(image.repository, "pull,push"))
        except RegistryUnreachableError as exc:
            raise ConfigurationError(
                f"registry {image.registry} is unreachable: {exc} (check the address, that "
                "the registry runs, and --insecure-registry for a plain-HTTP registry)"
            ) from exc
        except RegistryRefusedError as exc:
            raise ConfigurationError(f"registry {image.registry} refused a push: {exc}") from exc
        if response.status_code != 202:
            error = failure(what, response)
            if isinstance(error, RegistryTransientError):
                raise error
            raise ConfigurationError(f"registry {image.registry} refused a push: {error}")
        _cancel_upload(client, response, scope=_scope(image.repository, "pull,push"))


def _cancel_upload(client: RegistryClient, response: httpx.Response, *, scope: str) -> None:
    location = response.headers.get("location", "")
    if location:
        url = str(response.url.join(location))
        # an unfinished upload session left behind expires on its own (upload purging);
        # cancelling may need `delete`, which a push-only token lacks
        with contextlib.suppress(TransientError, RegistryRefusedError):
            client.request("DELETE", url, scope=scope)
