"""devtools.postgres with Debian's real PostgreSQL 15: the cluster of `make serve DB=postgres`.

What an operator relies on: the first serve makes the cluster, later ones reuse it and its
data, the Prefect server gets a working `prefect` database with pg_trgm over 127.0.0.1,
`make stop` leaves no PostgreSQL process, and a bad setting or an unreachable state dir
fails with one line naming it before anything starts. (Serving on the other database
while one runs is refused: tests/e2e/test_deployments.py, with a real Prefect server.)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from devtools import postgres, procfs, supervisor
from devtools.registry import free_port
from devtools.serve_config import ServeError, Settings, load_settings

pytestmark = pytest.mark.integration


def settings_for(state_dir: Path, postgres_port: int) -> Settings:
    return Settings(
        state_dir=state_dir,
        port=free_port(),
        prefect=Path("/nonexistent/prefect"),  # not used: only the database is started
        work_dir=state_dir / "work",
        registry_port=5000,
        timeout_s=120,
        database="postgres",
        postgres_port=postgres_port,
    )


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A state dir the postgres user can pass through (pytest's tmp dirs are 0700 under
    /tmp/pytest-of-root); whatever runs in it is stopped, even when the test fails."""
    path = Path(tempfile.mkdtemp(prefix="multiarch-pg-test-"))
    path.chmod(0o711)
    yield path
    settings = settings_for(path, 0)  # only its paths matter for a stop
    postgres.stop(settings)
    shutil.rmtree(path, ignore_errors=True)


def query(cluster: postgres.Cluster, sql: str) -> list[tuple]:
    """As the Prefect server connects: the URL's role and password over TCP."""
    dsn = cluster.connection_url().replace("postgresql+asyncpg://", "postgresql://")

    async def run() -> list[tuple]:
        connection = await asyncpg.connect(dsn, timeout=30)
        try:
            return [tuple(row) for row in await connection.fetch(sql)]
        finally:
            await connection.close()

    return asyncio.run(run())


def left_running(state_dir: Path, pid: int) -> list[int]:
    data_dir = str(state_dir / "postgres" / "data")
    named = [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and data_dir in " ".join(procfs.cmdline(int(entry.name)))
    ]
    return sorted({*procfs.group_members(pid), *(p for p in named if procfs.is_alive(p))})


def test_cluster_is_made_once_serves_prefect_and_stops_clean(state_dir, capsys):
    settings = settings_for(state_dir, free_port())
    cluster = postgres.ensure(settings)
    first = capsys.readouterr().out
    assert "postgres: cluster created in" in first
    assert "postgres: started (pid" in first
    record = supervisor.running(name="postgres", state_dir=state_dir / "serve")
    assert record is not None

    assert query(cluster, "SELECT current_user, current_database()") == [("prefect", "prefect")]
    assert ("pg_trgm",) in query(cluster, "SELECT extname FROM pg_extension")
    query(cluster, "CREATE TABLE kept AS SELECT 'still here' AS note")
    data_dir = state_dir / "postgres" / "data"
    assert data_dir.stat().st_mode & 0o777 == 0o700
    assert (state_dir / "postgres" / "password").stat().st_mode & 0o777 == 0o600
    if os.geteuid() == 0:  # PostgreSQL refuses root: it runs as Debian's postgres user
        assert data_dir.owner() == "postgres"
        assert Path(f"/proc/{record.pid}").owner() == "postgres"

    # Idempotent: the running one is reused, the cluster not made again.
    again = postgres.ensure(settings)
    second = capsys.readouterr().out
    assert f"postgres: already running (pid {record.pid}" in second
    assert "cluster created" not in second
    assert again == cluster

    stopped = postgres.stop(settings)
    assert str(stopped) == f"stopped pid {record.pid} (SIGINT)"  # a clean, fast shutdown
    assert left_running(state_dir, record.pid) == []
    assert not (state_dir / "serve" / "postgres.pid").exists()
    assert "database system is shut down" in (state_dir / "serve" / "postgres.log").read_text()

    # Served again after a stop: the same cluster, its data kept.
    postgres.ensure(settings)
    third = capsys.readouterr().out
    assert "cluster created" not in third
    assert query(cluster, "SELECT note FROM kept") == [("still here",)]
    restarted = supervisor.running(name="postgres", state_dir=state_dir / "serve")
    assert restarted is not None
    postgres.stop(settings)
    assert left_running(state_dir, restarted.pid) == []


def test_only_the_prefect_role_with_its_password_gets_in_over_tcp(state_dir):
    settings = settings_for(state_dir, free_port())
    cluster = postgres.ensure(settings)
    superuser = cluster.owner
    wrong = [
        f"postgresql://prefect:not-the-password@127.0.0.1:{cluster.port}/prefect",
        f"postgresql://{superuser}@127.0.0.1:{cluster.port}/postgres",
    ]

    async def refused(dsn: str) -> str:
        try:
            connection = await asyncpg.connect(dsn, timeout=30)
        except (asyncpg.PostgresError, OSError) as error:
            return type(error).__name__
        await connection.close()
        return "connected"

    outcomes = [asyncio.run(refused(dsn)) for dsn in wrong]
    assert "connected" not in outcomes, outcomes
    postgres.stop(settings)


def test_port_in_use_is_refused_naming_the_setting(state_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServeError, match=f"port {port} on 127.0.0.1 is already used.*"
                           "MULTIARCH_POSTGRES_PORT="):
            postgres.ensure(settings_for(state_dir, port))
    assert not (state_dir / "serve" / "postgres.pid").exists()


def test_a_directory_the_postgres_user_cannot_pass_is_named(tmp_path):
    closed = tmp_path / "closed"
    (closed / "state").mkdir(parents=True)
    closed.chmod(0o700)
    with pytest.raises(ServeError, match=f"{closed} \\(mode 0700\\) is not searchable.*"
                       f"chmod o\\+x {closed}"):
        postgres.check_reachable(closed / "state" / "postgres", "postgres")


def test_unknown_database_is_refused_naming_the_choices(monkeypatch):
    monkeypatch.setenv("MULTIARCH_DB", "mysql")
    with pytest.raises(ServeError, match=r"DB='mysql' .* choose sqlite or postgres"):
        load_settings()
