"""`make serve DB=postgres`: our own PostgreSQL cluster for the Prefect server.

SQLite serialises writers, so concurrent flow runs contend for it (task concurrency
leases most visibly); PostgreSQL does not. This runs Debian's PostgreSQL binaries on a
cluster of our own, never Debian's system cluster (pg_ctlcluster), under the state dir:

    <state>/postgres/data/      the cluster (initdb once; mode 0700, owned by the run user)
    <state>/postgres/run/       its Unix socket (nothing listens on a shared /var/run)
    <state>/postgres/password   the `prefect` role's password (mode 0600, ours)
    <state>/serve/postgres.{pid,log}   supervised like the Prefect server

Who runs it: PostgreSQL refuses root, so as root it runs as Debian's `postgres` system
user (subprocess's user/group options, the same as `setpriv --reuid --regid
--init-groups`); otherwise as ourselves. That user is the cluster's superuser and can only
log in through the socket (peer authentication). TCP is 127.0.0.1 only, and there only
the `prefect` role with a password (scram-sha-256): any local user could otherwise reach
the database, or its superuser. The password never appears in an argv or a log: the role
gets a SCRAM verifier computed here (what a failed statement could log), and the Prefect
server gets the URL in its environment alone (PREFECT_SERVER_DATABASE_CONNECTION_URL).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from devtools import supervisor
from devtools.serve_config import HOST, ServeError, Settings, say, shown

BIN_DIR = Path("/usr/lib/postgresql/15/bin")
SYSTEM_USER = "postgres"
ROLE = "prefect"
DATABASE = "prefect"
SCRAM_ITERATIONS = 4096
INSTALL_HINT = "install Debian's postgresql package (scripts/install-deps)"
# Idempotent; the role's password is reset to ours each time (psql variable `verifier`).
DATABASE_SQL = """
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'prefect') THEN
    CREATE ROLE prefect LOGIN;
  END IF;
END $$;
ALTER ROLE prefect LOGIN PASSWORD :'verifier';
SELECT 'CREATE DATABASE prefect OWNER prefect'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'prefect')\\gexec
\\connect prefect
CREATE EXTENSION IF NOT EXISTS pg_trgm;
"""


@dataclass(frozen=True)
class Cluster:
    """Where our cluster lives, who runs it and where it listens."""

    root: Path  # <state>/postgres
    port: int
    user: str | None  # None: ourselves
    log_dir: Path  # <state>/serve: pid file and log beside the server's

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    @property
    def owner(self) -> str:
        return self.user or pwd.getpwuid(os.geteuid()).pw_name

    def service(self) -> supervisor.Service:
        argv = (
            str(BIN_DIR / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-k", str(self.socket_dir),
            "-c", f"listen_addresses={HOST}",
        )  # fmt: skip
        return supervisor.Service(
            name="postgres",
            argv=argv,
            state_dir=self.log_dir,
            label="PostgreSQL",
            port=self.port,
            host=HOST,
            readiness=f"accepting connections on {HOST}:{self.port} (pg_isready)",
            cwd=self.root,
            env=_postgres_env(),
            user=self.user,
            stop_signal=signal.SIGINT,  # "fast" shutdown: clients are told, then it ends
        )

    def connection_url(self) -> str:
        """The Prefect server's database URL; it holds the password: environment only."""
        password = quote(self.password_file.read_text(encoding="utf-8").strip(), safe="")
        return f"postgresql+asyncpg://{ROLE}:{password}@{HOST}:{self.port}/{DATABASE}"

    def describe(self) -> str:
        return f"PostgreSQL on {HOST}:{self.port}, cluster in {shown(self.root)}"


def cluster(settings: Settings) -> Cluster:
    return Cluster(
        root=settings.state_dir / "postgres",
        port=settings.postgres_port,
        user=run_user(),
        log_dir=settings.serve_dir,
    )


def run_user() -> str | None:
    """Debian's `postgres` user when we are root (PostgreSQL refuses root), else None."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise ServeError(f"user {SYSTEM_USER} not found: {INSTALL_HINT}") from None
    return SYSTEM_USER


def ensure(settings: Settings) -> Cluster:
    """initdb once, start PostgreSQL (or reuse it), make the role, database and pg_trgm."""
    found = cluster(settings)
    if not (BIN_DIR / "postgres").is_file():
        raise ServeError(f"{BIN_DIR / 'postgres'} not found: {INSTALL_HINT}")
    _prepare_dirs(found)
    if not (found.data_dir / "PG_VERSION").is_file():
        _initdb(found)
        say(f"postgres: cluster created in {shown(found.data_dir)}")
    service = found.service()
    record = supervisor.running(name=service.name, state_dir=service.state_dir)
    ready = lambda: accepts_connections(found)  # noqa: E731
    if record is not None:
        if record.argv != service.argv:
            raise ServeError(
                f"PostgreSQL started earlier runs with other settings (pid {record.pid}, "
                f"{shown(service.pid_file)}), not on port {found.port}: `make stop` first"
            )
        supervisor.wait_until_ready(service, record, timeout_s=settings.timeout_s, ready=ready)
        say(f"postgres: already running (pid {record.pid}, {found.describe()})")
    else:
        try:
            record = supervisor.start(service, timeout_s=settings.timeout_s, ready=ready)
        except supervisor.PortTaken:
            raise ServeError(
                f"port {found.port} on {HOST} is already used by a process that "
                f"{shown(service.pid_file)} does not record; choose another port with "
                f"MULTIARCH_POSTGRES_PORT=..."
            ) from None
        say(f"postgres: started (pid {record.pid}, {found.describe()})")
    _ensure_database(found)
    say(f"postgres: role and database {DATABASE} with pg_trgm ready")
    return found


def stop(settings: Settings) -> supervisor.Stopped:
    service = cluster_for_stop(settings).service()
    return supervisor.stop(
        name=service.name, state_dir=service.state_dir, first_signal=service.stop_signal
    )


def cluster_for_stop(settings: Settings) -> Cluster:
    """The cluster's description without requiring the postgres user (nothing is started)."""
    return Cluster(
        root=settings.state_dir / "postgres",
        port=settings.postgres_port,
        user=None,
        log_dir=settings.serve_dir,
    )


def accepts_connections(found: Cluster) -> bool:
    """pg_isready over TCP: the port answers before recovery or startup is over."""
    done = subprocess.run(
        [str(BIN_DIR / "pg_isready"), "-q", "-h", HOST, "-p", str(found.port), "-d", "postgres"],
        env=_postgres_env(),
        capture_output=True,
        check=False,
        timeout=30,
    )
    return done.returncode == 0


def _prepare_dirs(found: Cluster) -> None:
    """The root is ours (the password file in it is ours alone); data and socket dirs
    belong to the run user. As root, refuse early when that user cannot reach them."""
    found.root.mkdir(parents=True, exist_ok=True)
    found.root.chmod(0o711)  # the run user may pass through, not list
    if found.user is not None:
        check_reachable(found.root, found.user)
    found.socket_dir.mkdir(mode=0o700, exist_ok=True)
    _give_to_run_user(found, found.socket_dir)
    if not found.password_file.exists():
        fd = os.open(found.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_urlsafe(24) + "\n")


def _give_to_run_user(found: Cluster, directory: Path) -> None:
    """As root, a directory PostgreSQL writes (data, socket) belongs to its run user."""
    if found.user is not None:
        shutil.chown(directory, user=found.user, group=pwd.getpwnam(found.user).pw_gid)


def check_reachable(path: Path, user: str) -> None:
    """Every directory above the cluster must be searchable by `user` (as root, a state
    dir under /root or pytest's 0700 temp dir is not); say which one is not, and how."""
    entry = pwd.getpwnam(user)
    groups = set(os.getgrouplist(user, entry.pw_gid))
    for directory in [path, *path.parents]:
        if not directory.exists():
            continue  # made later, by us, with the modes above
        info = directory.stat()
        if info.st_uid == entry.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            raise ServeError(
                f"user {user} (who runs PostgreSQL, which refuses root) cannot reach "
                f"{path}: {directory} (mode {stat.S_IMODE(info.st_mode):04o}) is not "
                f"searchable by it; `chmod o+x {directory}` or choose another state dir "
                "with MULTIARCH_STATE_DIR=..."
            )


def _initdb(found: Cluster) -> None:
    """initdb into a fresh directory renamed into place: a half-made cluster is never used."""
    partial = found.root / "data.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(mode=0o700)
    _give_to_run_user(found, partial)
    argv = [
        str(BIN_DIR / "initdb"),
        "-D", str(partial),
        "-U", found.owner,
        "--auth-local=peer",
        "--auth-host=scram-sha-256",
        "--encoding=UTF8",
        "--no-locale",
    ]  # fmt: skip
    done = _run_as_owner(found, argv, timeout=300)
    if done.returncode != 0:
        raise ServeError(f"initdb failed for {partial}:\n{(done.stdout + done.stderr).strip()}")
    partial.rename(found.data_dir)


def _ensure_database(found: Cluster) -> None:
    """Role `prefect` (its password reset to ours each time), database `prefect` owned by it,
    pg_trgm in it. SQL on stdin through the socket as the superuser: no password in argv."""
    verifier = scram_verifier(found.password_file.read_text(encoding="utf-8").strip())
    # The verifier is base64 and digits (no quote can occur); psql quotes it with :'...'.
    sql = f"\\set verifier {verifier}\n{DATABASE_SQL}"
    argv = [
        str(BIN_DIR / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
        "-h", str(found.socket_dir), "-p", str(found.port), "-U", found.owner, "-d", "postgres",
    ]  # fmt: skip
    done = _run_as_owner(found, argv, stdin=sql, timeout=120)
    if done.returncode != 0:
        raise ServeError(
            f"creating role/database {DATABASE} failed:\n{(done.stdout + done.stderr).strip()}"
        )


def scram_verifier(password: str, *, salt: bytes | None = None) -> str:
    """PostgreSQL's stored form of a scram-sha-256 password (RFC 5802/7677), so only this,
    never the password, reaches the server, where a failed statement could be logged."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return (
        f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
    )


def _run_as_owner(
    found: Cluster, argv: list[str], *, stdin: str | None = None, timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        input=stdin,
        cwd=found.root,
        env=_postgres_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        **supervisor.user_options(found.user),
    )


def _postgres_env() -> dict[str, str]:
    """A small environment: none of ours (Prefect settings, credentials) reaches PostgreSQL,
    and no PG* variable of the caller's redirects a client elsewhere."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "TZ": "UTC"}
