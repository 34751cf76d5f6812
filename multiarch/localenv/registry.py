"""A throw-away local OCI registry (Debian `docker-registry`) for the demo and the tests.

Publishing needs somewhere to push to. Debian's distribution 2.8 binary runs without
Docker, root or network access, so the newcomer demo and the integration tests get a real
registry whose state lives entirely under one directory they can delete.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from multiarch.errors import ConfigurationError

BINARY = "docker-registry"
_POLL_INTERVAL_S = 0.1
_STOP_TIMEOUT_S = 10.0
_LOG_TAIL_LINES = 15
_BIND_ERROR = "address already in use"

# Popen handles of registries started by this process: holding them lets us reap the
# child after stopping it (otherwise it lingers as a zombie that still "exists").
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


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
        return self.state_dir / "registry.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "registry.log"

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
    pid = _recorded_pid(registry)
    if pid is not None and _is_our_registry(pid, registry) and _answers_v2(registry):
        return registry
    if pid is not None:
        # Ours but not answering on the requested address (hung, or another port): restart.
        stop_registry(state_dir=state_dir)
    binary = shutil.which(BINARY)
    if binary is None:
        raise ConfigurationError(
            f"cannot start a local registry: `{BINARY}` is not installed; install the Debian "
            f"package: apt-get install {BINARY}"
        )
    _fail_if_port_taken(registry)
    registry.data_dir.mkdir(parents=True, exist_ok=True)
    registry.config_file.write_text(_config_yaml(registry), encoding="utf-8")
    process, log_offset = _spawn(binary, registry)
    _wait_until_ready(process, registry, log_offset=log_offset, timeout_s=timeout_s)
    return registry


def stop_registry(*, state_dir: Path) -> bool:
    """Stop the registry recorded in `state_dir`; return whether one was running.

    The pid is only signalled if it still is our docker-registry, so a stale pid file
    whose number was reused by an unrelated process can never kill that process.
    """
    registry = LocalRegistry(host="", port=0, state_dir=state_dir)
    pid = _recorded_pid(registry)
    if pid is None:
        return False
    stopped = False
    if _is_our_registry(pid, registry):
        _terminate(pid)
        stopped = True
    registry.pid_file.unlink(missing_ok=True)
    return stopped


def free_port() -> int:
    """Return a TCP port that was free a moment ago, so parallel tests do not collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def _spawn(binary: str, registry: LocalRegistry) -> tuple[subprocess.Popen[bytes], int]:
    """Start the registry in its own session so it outlives us and ignores our Ctrl-C.

    Returns the process and the log size before it started, so error messages show only
    this attempt's log lines.
    """
    registry.state_dir.mkdir(parents=True, exist_ok=True)
    # REGISTRY_* variables override the config file; never let the caller's env leak in.
    env = {key: value for key, value in os.environ.items() if not key.startswith("REGISTRY_")}
    with registry.log_file.open("ab") as log:
        offset = log.tell()
        process = subprocess.Popen(
            [binary, "serve", str(registry.config_file.resolve())],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=registry.state_dir,
            env=env,
        )
    _CHILDREN[process.pid] = process
    registry.pid_file.write_text(f"{process.pid}\n", encoding="utf-8")
    return process, offset


def _wait_until_ready(
    process: subprocess.Popen[bytes],
    registry: LocalRegistry,
    *,
    log_offset: int,
    timeout_s: float,
) -> None:
    """Poll /v2/ until it answers; on failure clean up and explain using the log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if _answers_v2(registry):
            return
        time.sleep(_POLL_INTERVAL_S)
    exited = process.poll() is not None
    stop_registry(state_dir=registry.state_dir)
    tail = _log_tail(registry.log_file, offset=log_offset)
    if _BIND_ERROR in tail:
        raise ConfigurationError(_port_taken_message(registry) + f"; registry log: {tail}")
    what = f"exited with code {process.returncode}" if exited else f"did not answer {timeout_s}s"
    raise ConfigurationError(
        f"the local registry at {registry.address} {what} (GET {registry.url}/v2/); "
        f"last lines of {registry.log_file}: {tail}"
    )


def _fail_if_port_taken(registry: LocalRegistry) -> None:
    """Refuse early when something else listens on the port, instead of a cryptic bind log."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        if sock.connect_ex((registry.host, registry.port)) != 0:
            return
    raise ConfigurationError(_port_taken_message(registry))


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


def _recorded_pid(registry: LocalRegistry) -> int | None:
    """The pid from the pid file, or None when absent or garbled."""
    try:
        return int(registry.pid_file.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def _is_our_registry(pid: int, registry: LocalRegistry) -> bool:
    """True if `pid` is alive and is docker-registry serving this state dir's config."""
    if not _is_alive(pid):
        return False
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    argv = [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]
    return (
        bool(argv) and Path(argv[0]).name == BINARY and str(registry.config_file.resolve()) in argv
    )


def _is_alive(pid: int) -> bool:
    """True if `pid` runs and is not a zombie (a zombie still has a /proc entry)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in {"Z", "X"}


def _terminate(pid: int) -> None:
    """SIGTERM, wait up to 10 s, then SIGKILL: a graceful stop that cannot hang forever."""
    for sig, grace_s in ((signal.SIGTERM, _STOP_TIMEOUT_S), (signal.SIGKILL, _STOP_TIMEOUT_S)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not _is_alive(pid):
                return
            time.sleep(_POLL_INTERVAL_S)


def _log_tail(log_file: Path, *, offset: int) -> str:
    """The last lines this start attempt wrote to the log, joined for one-line errors."""
    try:
        with log_file.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    lines = [line for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-_LOG_TAIL_LINES:]) or "(empty log)"
