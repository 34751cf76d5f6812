"""Registries as users run them: Debian's docker-registry behind TLS with a private CA,
with basic auth (htpasswd) or token auth, and the token issuer the latter needs.

The registry is the real one (distribution 2.8). No token server is packaged here
(docker_auth, Keycloak's distribution are not served), so `TokenIssuer` stands in for one
at our boundary: it answers the distribution token protocol (`GET /token?service=&scope=`
with basic auth), grants only the actions its ACL allows, and signs ES256 JWTs with a key
whose certificate chains to the registry's `rootcertbundle`. What a real one adds and this
does not: refresh tokens and OAuth2 `POST /token`, offline tokens, per-user key rotation,
audit logs, rate limits, LDAP/OIDC users, and revocation.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import secrets
import ssl
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import bcrypt
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from devtools import supervisor
from devtools.registry import free_port
from tests.cluster.pki import Authority, KeyPair

SERVICE = "multiarch-test-registry"
ISSUER = "multiarch-test-issuer"
TOKEN_TTL_S = 300


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class Grant:
    """`user` may do `actions` on repositories matching `pattern` (fnmatch, `team/*`)."""

    user: str
    pattern: str
    actions: tuple[str, ...]


class TokenIssuer:
    """Signs registry tokens for known users, with only the access the ACL grants."""

    def __init__(self, *, signer: KeyPair, users: Mapping[str, str],
                 grants: Sequence[Grant]) -> None:
        self.key = serialization.load_pem_private_key(signer.key.read_bytes(), None)
        cert = x509.load_pem_x509_certificate(signer.cert.read_bytes())
        self.x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self.users = dict(users)
        self.grants = list(grants)
        self.requests: list[tuple[str | None, list[str]]] = []  # (user, scopes asked)

    def user_of(self, authorization: str | None) -> str | None:
        """The user a Basic header proves, None for anonymous; ValueError when wrong."""
        if not authorization:
            return None
        kind, _, encoded = authorization.partition(" ")
        user, _, password = base64.b64decode(encoded).decode().partition(":")
        if kind.lower() != "basic" or self.users.get(user) != password:
            raise ValueError("bad credentials")
        return user

    def granted(self, user: str | None, scope: str) -> dict[str, object] | None:
        """The `access` entry for one `repository:NAME:ACTIONS` scope, cut to the ACL."""
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind != "repository" or not name:
            return None
        allowed = {a for g in self.grants if g.user == user
                   and fnmatch.fnmatchcase(name, g.pattern) for a in g.actions}
        wanted = [a for a in actions.split(",") if a in allowed or "*" in allowed]
        return {"type": "repository", "name": name, "actions": wanted}

    def token(self, user: str | None, scopes: Sequence[str]) -> str:
        now = int(time.time())
        access = [entry for s in scopes if (entry := self.granted(user, s)) is not None]
        claims = {"iss": ISSUER, "sub": user or "", "aud": SERVICE, "exp": now + TOKEN_TTL_S,
                  "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access}
        header = {"typ": "JWT", "alg": "ES256", "x5c": [self.x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}." \
                        f"{_b64url(json.dumps(claims).encode())}"
        assert isinstance(self.key, ec.EllipticCurvePrivateKey)
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)  # JWS ES256 wants r || s, 32 bytes each
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _handler(issuer: TokenIssuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            scopes = [s for value in parse_qs(url.query).get("scope", [])
                      for s in value.split(" ") if s]
            try:
                user = issuer.user_of(self.headers.get("Authorization"))
            except ValueError:
                self._answer(401, {"details": "bad credentials"})
                return
            issuer.requests.append((user, scopes))
            token = issuer.token(user, scopes)
            self._answer(200, {"token": token, "access_token": token,
                               "expires_in": TOKEN_TTL_S})

        def _answer(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextmanager
def serving_tokens(issuer: TokenIssuer, *, server: KeyPair) -> Iterator[str]:
    """Serve the issuer over HTTPS on 127.0.0.1; yields its realm URL, named `localhost`
    (go-containerregistry refuses a realm that is a private IP literal, an SSRF guard;
    `server` must name localhost)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(issuer))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(server.cert), str(server.key))
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{httpd.server_address[1]}/token"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@dataclass(frozen=True)
class SecureRegistry:
    address: str
    ca: Path  # the CA certificate that signed the registry's (and the issuer's) certificate
    state_dir: Path


def htpasswd_auth(path: Path, users: Mapping[str, str]) -> str:
    """The `auth:` block for htpasswd users (bcrypt, as distribution requires)."""
    path.write_text("".join(
        f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"
        for user, password in users.items()))
    return f"auth:\n  htpasswd:\n    realm: test\n    path: {json.dumps(str(path))}\n"


def token_auth(realm: str, ca: Path) -> str:
    return (f"auth:\n  token:\n    realm: {json.dumps(realm)}\n    service: {SERVICE}\n"
            f"    issuer: {ISSUER}\n    rootcertbundle: {json.dumps(str(ca))}\n")


@contextmanager
def tls_registry(state: Path, authority: Authority, *, auth: str,
                 client_ca: Path | None = None) -> Iterator[SecureRegistry]:
    """docker-registry on 127.0.0.1 over TLS with a certificate of `authority`; `auth` is
    the config's `auth:` block; `client_ca` turns on mutual TLS."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    pair = authority.issue(f"registry-{port}", common_name="127.0.0.1",
                           server_ips=("127.0.0.1",))
    tls = (f"  tls:\n    certificate: {json.dumps(str(pair.cert))}\n"
           f"    key: {json.dumps(str(pair.key))}\n")
    if client_ca is not None:
        tls += f"    clientcas:\n      - {json.dumps(str(client_ca))}\n"
    (state / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {json.dumps(str(state / 'data'))}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {json.dumps(address)}\n  secret: {secrets.token_hex(8)}\n{tls}{auth}")
    service = supervisor.Service(
        name="registry", argv=("docker-registry", "serve", str(state / "config.yml")),
        state_dir=state, label=f"the TLS registry at {address}", port=port, host="127.0.0.1",
        readiness="answering 401 at https /v2/", cwd=state,
        env={k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")})
    supervisor.start(service, timeout_s=30,
                     ready=lambda: _answers(address, authority.cert_path, client_ca is None))
    try:
        yield SecureRegistry(address=address, ca=authority.cert_path, state_dir=state)
    finally:
        supervisor.stop(name="registry", state_dir=state)


def _answers(address: str, ca: Path, plain: bool) -> bool:
    """/v2/ answers (200 open, 401 with auth); under mutual TLS the handshake itself,
    refusing a client without a certificate, is the answer."""
    try:
        answer = httpx.get(f"https://{address}/v2/", verify=ssl.create_default_context(
            cafile=str(ca)), timeout=1.0, trust_env=False)
    except httpx.ConnectError as exc:
        return not plain and "refused" not in str(exc).lower()
    except httpx.HTTPError:
        return not plain
    return answer.status_code in (200, 401)


@contextmanager
def trusted_in_certs_d(registry: str, ca: Path,
                       root: Path = Path("/etc/containers/certs.d")) -> Iterator[Path]:
    """The CA where containers/image looks for it (and we do), removed afterwards."""
    directory = root / registry
    directory.mkdir(parents=True, exist_ok=False)
    try:
        (directory / "ca.crt").write_bytes(ca.read_bytes())
        yield directory
    finally:
        for item in directory.iterdir():
            item.unlink()
        directory.rmdir()
