"""A throw-away local OCI registry (Debian `docker-registry`) for the demo and the tests.

Publishing needs somewhere to push to. Debian's distribution 2.8 binary runs without
Docker, root or network access, so the newcomer demo and the integration tests get a real
registry whose state lives entirely under one directory they can delete.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import httpx

from devtools import supervisor
from multiarch.errors import ConfigurationError

BINARY = "docker-registry"
SERVICE = "registry"
_STOP_TIMEOUT_S = 10.0
_BIND_ERROR = "address already in use"


@dataclass(frozen=True)
class LocalRegistry:
    """Where a local registry listens and where it keeps its files."""

    host: str
    port: int
    state_dir: Path

    @property
    def address(self) -> str:
        """host:port, the form image references and `--tls-verify=false` pushes use."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Base URL of the registry's HTTP API."""
        return f"http://{self.address}"

    @property
    def pid_file(self) -> Path:
        return supervisor.pid_file(self.state_dir, SERVICE)

    @property
    def log_file(self) -> Path:
        return supervisor.log_file(self.state_dir, SERVICE)

    @property
    def config_file(self) -> Path:
        return self.state_dir / "config.yml"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"


def start_registry(
    *,
    state_dir: Path,
    port: int = 5000,
    host: str = "127.0.0.1",
    timeout_s: float = 30,
) -> LocalRegistry:
    """Start a registry serving from `state_dir`, or reuse the one already running there.

    Idempotent so `make demo` and test fixtures can call it unconditionally.
    """
    registry = LocalRegistry(host=host, port=port, state_dir=state_dir)
    if supervisor.running(name=SERVICE, state_dir=state_dir) is not None:
        if _answers_v2(registry):
            return registry
        # Ours but not answering on the requested address (hung, or another port): restart.
        stop_registry(state_dir=state_dir)
    binary = shutil.which(BINARY)
    if binary is None:
        raise ConfigurationError(
            f"cannot start a local registry: `{BINARY}` is not installed; install the Debian "
            f"package: apt-get install {BINARY}"
        )
    registry.data_dir.mkdir(parents=True, exist_ok=True)
    registry.config_file.write_text(_config_yaml(registry), encoding="utf-8")
    try:
        supervisor.start(
            _service(registry, binary), timeout_s=timeout_s, ready=lambda: _answers_v2(registry)
        )
    except supervisor.PortTaken:
        raise ConfigurationError(_port_taken_message(registry)) from None
    except supervisor.StartFailed as exc:
        if _BIND_ERROR in exc.log_tail:
            raise ConfigurationError(
                _port_taken_message(registry) + f"; registry log:\n{exc.log_tail}"
            ) from None
        raise ConfigurationError(str(exc)) from None
    return registry


def stop_registry(*, state_dir: Path) -> bool:
    """Stop the registry recorded in `state_dir`; return whether one was running.

    The supervisor only signals the pid if it still runs the recorded command, so a stale
    pid file whose number was reused by an unrelated process can never kill that process.
    """
    return supervisor.stop(name=SERVICE, state_dir=state_dir, grace_s=_STOP_TIMEOUT_S).stopped


def registry_status(registry: LocalRegistry) -> supervisor.Status:
    return supervisor.status(
        name=SERVICE, state_dir=registry.state_dir, host=registry.host, port=registry.port
    )


def free_port() -> int:
    """Return a TCP port that was free a moment ago, so parallel tests do not collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _service(registry: LocalRegistry, binary: str) -> supervisor.Service:
    # REGISTRY_* variables override the config file; never let the caller's env leak in.
    env = {key: value for key, value in os.environ.items() if not key.startswith("REGISTRY_")}
    return supervisor.Service(
        name=SERVICE,
        argv=(binary, "serve", str(registry.config_file.resolve())),
        state_dir=registry.state_dir,
        label=f"the local registry at {registry.address}",
        port=registry.port,
        host=registry.host,
        readiness=f"answering GET {registry.url}/v2/",
        cwd=registry.state_dir,
        env=env,
    )


def _config_yaml(registry: LocalRegistry) -> str:
    """Render the registry config; JSON-quoted scalars are valid YAML and survive any path."""
    root = json.dumps(str(registry.data_dir.resolve()))
    addr = json.dumps(registry.address)
    # An explicit secret silences the "No HTTP secret provided" warning that otherwise
    # buries the real error in the log tail; one instance needs no shared secret.
    secret = json.dumps(secrets.token_hex(16))
    return (
        "version: 0.1\n"
        "log:\n"
        "  level: info\n"
        "  formatter: text\n"
        "storage:\n"
        "  filesystem:\n"
        f"    rootdirectory: {root}\n"
        "  delete:\n"
        "    enabled: true\n"
        "http:\n"
        f"  addr: {addr}\n"
        f"  secret: {secret}\n"
    )


def _port_taken_message(registry: LocalRegistry) -> str:
    """Explain a port conflict and name both ways out."""
    who = (
        "another registry (not the one recorded in this state dir)"
        if _answers_v2(registry)
        else "another process"
    )
    return (
        f"cannot start the local registry on {registry.address}: the port is already used "
        f"by {who}; pick another port (e.g. --port {free_port()}) or stop that process "
        f"(`ss -ltnp 'sport = :{registry.port}'` shows which one)"
    )


def _answers_v2(registry: LocalRegistry) -> bool:
    """True when a registry API answers 200 at /v2/ (proxies from the env are ignored)."""
    try:
        response = httpx.get(f"{registry.url}/v2/", timeout=1.0, trust_env=False)
    except httpx.HTTPError:
        return False
    return response.status_code == 200
