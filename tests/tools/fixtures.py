"""Fixtures: the Go tools (built on first use, devtools/gotools.py) and a referrers registry.

`crane` and `regctl` are the paths of the binaries. `referrers_registry` is our build of
go-containerregistry's registry (tests/tools/referrers_registry) on a free port of
127.0.0.1 over plain HTTP, started by the project's supervisor for the whole session and
stopped with its process group at the end. It keeps everything in memory, has the OCI 1.1
referrers API, lists each referrer's *config* media type as its artifactType and sends no
OCI-Subject header: what clients have to cope with, so it is left that way.

A missing `go` or a failed build is an error of the fixture, never a skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devtools import supervisor
from devtools.gotools import ensure_tool
from devtools.registry import free_port

SERVICE = "referrers-registry"
_PORT_ATTEMPTS = 3
_BIND_ERROR = "address already in use"


@dataclass(frozen=True)
class ReferrersRegistry:
    """A running referrers registry: where it listens and where its log is."""

    host: str
    port: int
    state_dir: Path
    tls: bool = False

    @property
    def address(self) -> str:
        """host:port, as in image references (`127.0.0.1:PORT/repo:tag`)."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    @property
    def log_file(self) -> Path:
        """What it logged (every request, on stderr), to quote when a test fails."""
        return supervisor.log_file(self.state_dir, SERVICE)


def start_referrers_registry(
    state_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    timeout_s: float = 30,
) -> ReferrersRegistry:
    """Start one under `state_dir` (pid file and log) and return once GET /v2/ answers 200.

    Without `port` a free one is picked, and another if it was taken in the meantime.
    With `tls_cert` and `tls_key` it serves HTTPS.
    """
    binary = ensure_tool("referrers_registry")
    tls = tls_cert is not None
    if tls != (tls_key is not None):
        raise ValueError("tls_cert and tls_key go together")
    attempts = 1 if port is not None else _PORT_ATTEMPTS
    for attempt in range(attempts):
        registry = ReferrersRegistry(
            host=host, port=port or free_port(), state_dir=state_dir, tls=tls
        )
        argv = [str(binary), "-addr", registry.address]
        if tls_cert is not None and tls_key is not None:
            argv += ["-tls-cert", str(tls_cert), "-tls-key", str(tls_key)]
        service = supervisor.Service(
            name=SERVICE,
            argv=tuple(argv),
            state_dir=state_dir,
            label=f"the referrers registry at {registry.address}",
            port=registry.port,
            host=host,
            readiness=f"answering GET {registry.url}/v2/",
            cwd=state_dir,
        )
        try:
            supervisor.start(service, timeout_s=timeout_s, ready=lambda r=registry: _answers(r))
        except supervisor.PortTaken:
            if attempt + 1 == attempts:
                raise
        except supervisor.StartFailed as failed:
            if _BIND_ERROR not in failed.log_tail or attempt + 1 == attempts:
                raise
        else:
            return registry
    raise AssertionError("unreachable")


def stop_referrers_registry(registry: ReferrersRegistry) -> supervisor.Stopped:
    """Stop it and its process group (SIGTERM, then SIGKILL); removes the pid file."""
    return supervisor.stop(name=SERVICE, state_dir=registry.state_dir, grace_s=10)


def running_pid(registry: ReferrersRegistry) -> int | None:
    """The pid of the registry process if it still runs, else None."""
    record = supervisor.running(name=SERVICE, state_dir=registry.state_dir)
    return record.pid if record is not None else None


def regctl_env(home: Path) -> dict[str, str]:
    """An environment for regctl that reads and writes only under `home`: its own config
    file (REGCTL_CONFIG) and no docker credentials of the user."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DOCKER_CONFIG", "REGCTL_CONFIG", "XDG_CONFIG_HOME")
    }
    env.update(
        HOME=str(home), REGCTL_CONFIG=str(home / "regctl.json"), DOCKER_CONFIG=str(home / "docker")
    )
    return env


def _answers(registry: ReferrersRegistry) -> bool:
    try:
        response = httpx.get(f"{registry.url}/v2/", timeout=1.0, trust_env=False, verify=False)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


@pytest.fixture(scope="session")
def crane() -> Path:
    """go-containerregistry's `crane` (v0.22.1); plain HTTP registries need `--insecure`."""
    return ensure_tool("crane")


@pytest.fixture(scope="session")
def regctl() -> Path:
    """regclient's `regctl` (v0.11.7); see `regctl_env` for a private config."""
    return ensure_tool("regctl")


@pytest.fixture(scope="session")
def referrers_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReferrersRegistry]:
    """One referrers registry for the session (in memory, plain HTTP on 127.0.0.1)."""
    registry = start_referrers_registry(tmp_path_factory.mktemp("referrers-registry"))
    try:
        yield registry
    finally:
        stop_referrers_registry(registry)
