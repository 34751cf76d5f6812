"""Trust and credentials for a registry, decided the way containers/image decides them.

skopeo and buildah (containers/image) read certificates and logins from fixed places; our
own HTTP calls (tags, referrers, verify) must read the very same places in the same order,
or a registry that skopeo pushes to would fail here with CERTIFICATE_VERIFY_FAILED, or a
`skopeo login` would be answered with "no credentials". This module is that one lookup:

- TLS (containers-certs.d(5)): the first of `~/.config/containers/certs.d/HOST:PORT`,
  `/etc/containers/certs.d/HOST:PORT`, `/etc/docker/certs.d/HOST:PORT` that exists; every
  `*.crt` in it is a CA added to the system store (which honours `SSL_CERT_FILE` and
  `SSL_CERT_DIR`, as Go's does), and `NAME.cert` with `NAME.key` is a client certificate
  (mutual TLS).
- Credentials (containers-auth.json(5)): `REGISTRY_AUTH_FILE` alone when set; otherwise
  `$XDG_RUNTIME_DIR/containers/auth.json` (or `/run/containers/$UID/auth.json` without
  XDG_RUNTIME_DIR: where `skopeo login` as root writes), `$XDG_CONFIG_HOME/containers/
  auth.json`, `$DOCKER_CONFIG/config.json` (or `~/.docker/config.json`), `~/.dockercfg`.
  In each file a `credHelpers` entry for the registry wins, then the most specific `auths`
  key (`host/ns/repo`, then `host/ns`, then `host`). A `credsStore` (Docker's default
  helper) is read by Docker only, not by skopeo 1.9 or buildah (measured): credentials
  found only there are refused with the `credHelpers` line that makes all tools agree.

Credential helpers are Docker's protocol: `docker-credential-NAME get` with the server on
stdin, JSON `{"Username", "Secret"}` on stdout. Their answers and the passwords read here
are returned to the caller and never logged.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import ssl
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from multiarch.errors import ConfigurationError

SYSTEM_CERTS_DIRS = (Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d"))
HELPER_TIMEOUT_S = 30.0
DOCKER_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io",
                   "https://index.docker.io/v1/")
_SCHEME = re.compile(r"^https?://")


@dataclass(frozen=True, kw_only=True)
class AuthFile:
    """One credentials file; `legacy` is `~/.dockercfg`'s format (no `auths` wrapper)."""

    path: Path
    legacy: bool = False


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or str(Path.home()))


def is_loopback(registry: str) -> bool:
    """Docker and containers tools allow plain HTTP to a registry on this machine."""
    if registry.startswith("["):  # [::1]:5000
        host = registry[1:].split("]", 1)[0]
    else:
        host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    return host in ("127.0.0.1", "localhost", "::1")


def certs_dirs(env: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """The per-host certificate roots, in containers/image's order (the user's first)."""
    env = os.environ if env is None else env
    return (_home(env) / ".config" / "containers" / "certs.d", *SYSTEM_CERTS_DIRS)


def cert_dir(registry: str, env: Mapping[str, str] | None = None) -> Path | None:
    """The certificate directory for `registry` (HOST:PORT), the first that exists."""
    for root in certs_dirs(env):
        candidate = root / registry
        if candidate.is_dir():
            return candidate
    return None


def ssl_context(registry: str, env: Mapping[str, str] | None = None) -> ssl.SSLContext:
    """The system store (and SSL_CERT_FILE/SSL_CERT_DIR) plus the registry's certs.d.

    A broken file in certs.d is a ConfigurationError naming it: skopeo refuses it too.
    """
    env = os.environ if env is None else env
    context = ssl.create_default_context()
    _load_env_locations(context, env)
    directory = cert_dir(registry, env)
    if directory is None:
        return context
    try:
        for ca in sorted(directory.glob("*.crt")):
            context.load_verify_locations(cafile=str(ca))
        for cert in sorted(directory.glob("*.cert")):
            key = cert.with_suffix(".key")
            if not key.is_file():
                raise ConfigurationError(
                    f"{cert}: a client certificate without its key {key.name}: put the key "
                    f"beside it, or remove the certificate")
            context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(
            f"certificates for {registry} in {directory} cannot be loaded: {exc}: fix or "
            "remove the file (ca.crt: PEM CA certificates; NAME.cert + NAME.key: a client "
            "certificate)") from exc
    return context


def _load_env_locations(context: ssl.SSLContext, env: Mapping[str, str]) -> None:
    """SSL_CERT_FILE/SSL_CERT_DIR of `env` (OpenSSL reads the process's own already)."""
    cafile, capath = env.get("SSL_CERT_FILE"), env.get("SSL_CERT_DIR")
    if env is os.environ or not (cafile or capath):
        return
    context.load_verify_locations(cafile=cafile or None, capath=capath or None)


def auth_files(env: Mapping[str, str] | None = None) -> list[AuthFile]:
    """Where containers/image looks for credentials, in its order (containers-auth.json(5))."""
    env = os.environ if env is None else env
    if env.get("REGISTRY_AUTH_FILE"):
        return [AuthFile(path=Path(env["REGISTRY_AUTH_FILE"]))]
    home = _home(env)
    primary = (Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json"
               if env.get("XDG_RUNTIME_DIR")
               else Path("/run/containers") / str(os.getuid()) / "auth.json")
    config_home = Path(env.get("XDG_CONFIG_HOME") or str(home / ".config"))
    docker = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else home / ".docker"
    return [AuthFile(path=primary),
            AuthFile(path=config_home / "containers" / "auth.json"),
            AuthFile(path=docker / "config.json"),
            AuthFile(path=home / ".dockercfg", legacy=True)]


def auth_file_candidates(env: Mapping[str, str] | None = None) -> list[Path]:
    return [entry.path for entry in auth_files(env)]


def trust_and_auth_paths(env: Mapping[str, str] | None = None) -> list[Path]:
    """Every existing file or directory this module reads trust or credentials from: the
    auth files, the certs.d roots, SSL_CERT_FILE and SSL_CERT_DIR. What a tool run in
    another root (multiarch.toolchain) must see to trust and log in as we do."""
    env = os.environ if env is None else env
    found = [*auth_file_candidates(env), *certs_dirs(env)]
    found += [Path(env[name]) for name in ("SSL_CERT_FILE", "SSL_CERT_DIR") if env.get(name)]
    return [path for path in found if path.is_absolute() and path.exists()]


def _normal_key(key: str) -> str:
    """`https://host:5000/v2/` -> `host:5000`; `host/ns/repo` stays (a namespace key)."""
    key = _SCHEME.sub("", key).rstrip("/")
    return key.removesuffix("/v2").removesuffix("/v1")


def _lookup_keys(registry: str, repository: str | None) -> list[str]:
    """Most specific first: `host/a/b`, `host/a`, `host` (the auth.json matching order)."""
    keys = []
    parts = (repository or "").split("/") if repository else []
    for end in range(len(parts), 0, -1):
        keys.append("/".join([registry, *parts[:end]]))
    keys.append(registry)
    return keys


def _auth_entries(data: Mapping[str, object], *, legacy: bool) -> dict[str, Mapping[str, str]]:
    raw = data if legacy else data.get("auths") or {}
    if not isinstance(raw, dict):
        return {}
    return {_normal_key(k): v for k, v in raw.items() if isinstance(v, dict)}


def _decode(entry: Mapping[str, str]) -> tuple[str, str] | None:
    if entry.get("auth"):
        user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        return user, password
    if entry.get("username") and entry.get("password"):
        return entry["username"], entry["password"]
    return None


def _read_json(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _hub_aliases(registry: str) -> tuple[str, ...]:
    return DOCKER_HUB_KEYS if registry in DOCKER_HUB_KEYS else (registry,)


def credentials_in(entry: AuthFile, registry: str,
                   repository: str | None = None) -> tuple[str, str] | None:
    """The credentials one file gives for `registry`/`repository`, or None."""
    data = _read_json(entry.path)
    if data is None:
        return None
    helpers = data.get("credHelpers") if isinstance(data.get("credHelpers"), dict) else {}
    for alias in _hub_aliases(registry):
        if isinstance(helpers, dict) and alias in helpers:
            return helper_credentials(str(helpers[alias]), alias, origin=entry.path)
    auths = _auth_entries(data, legacy=entry.legacy)
    for alias in _hub_aliases(registry):
        for key in _lookup_keys(_normal_key(alias), repository):
            if key in auths and (found := _decode(auths[key])) is not None:
                return found
    store = data.get("credsStore")
    if isinstance(store, str) and store and helper_credentials(
            store, registry, origin=entry.path, missing_ok=True) is not None:
        raise ConfigurationError(
            f"{entry.path}: the credentials for {registry} are in credsStore {store!r}, "
            "which skopeo and buildah do not read (they would push without them): add "
            f'"credHelpers": {{"{registry}": "{store}"}} to that file, the same helper for all')
    return None


def credentials_for(registry: str, files: list[Path] | list[AuthFile] | None = None,
                    repository: str | None = None) -> tuple[str, str] | None:
    """(user, password) for `registry` from the first file that has some, in order."""
    entries = auth_files() if files is None else [
        f if isinstance(f, AuthFile) else AuthFile(path=f, legacy=f.name == ".dockercfg")
        for f in files]
    for entry in entries:
        found = credentials_in(entry, registry, repository)
        if found is not None:
            return found
    return None


def helper_credentials(name: str, server: str, *, origin: Path,
                       missing_ok: bool = False) -> tuple[str, str] | None:
    """Ask `docker-credential-NAME get` for `server`'s credentials (Docker's protocol).

    An absent helper program is a ConfigurationError (the user named it); a helper that
    knows no credentials for this server (`credsStore`, `missing_ok`) gives None.
    """
    program = shutil.which(f"docker-credential-{name}")
    if program is None:
        raise ConfigurationError(
            f"{origin} names the credential helper {name!r} but docker-credential-{name} is "
            "not on PATH: install it, or log in with `skopeo login` instead")
    try:
        answer = subprocess.run([program, "get"], input=server, capture_output=True,
                                text=True, timeout=HELPER_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ConfigurationError(
            f"credential helper docker-credential-{name} did not answer within "
            f"{HELPER_TIMEOUT_S:.0f} s for {server}") from exc
    if answer.returncode != 0:
        if missing_ok:
            return None
        raise ConfigurationError(
            f"credential helper docker-credential-{name} has no credentials for {server} "
            f"(exit {answer.returncode}): log in through it, or remove the entry from {origin}")
    try:
        found = json.loads(answer.stdout)
        return str(found["Username"]), str(found["Secret"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(
            f"credential helper docker-credential-{name} answered for {server} with "
            "something that is not {\"Username\", \"Secret\"} JSON") from exc
