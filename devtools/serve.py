"""`make serve`: a local Prefect server, work pools, limits, a worker, the deployments.

    python -m devtools serve   start (or reuse) everything, deploy prefect.yaml, print the UI
    python -m devtools stop    stop what it started (`make stop`)

Idempotent: what is already running (recorded in <state>/serve/*.pid and still the same
process) is reused, work pools and concurrency limits are only created when missing, and
the deployments are applied again. Stop signals only recorded processes whose
/proc/PID/cmdline and start time still match the record (devtools.supervisor). The
registry, emulation and base image are `make up`'s job; this neither starts nor stops
them. Settings come from the environment: see devtools.serve_config.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from pathlib import Path

from devtools import postgres, supervisor
from devtools.prefect_api import api, cli_or_fail, healthy, prefect_cli, worker_heartbeat_since
from devtools.serve_config import HOST, REPO, ServeError, Settings, int_env, say, shown

LOCAL_POOL = "multiarch-local"
KUBERNETES_POOL = "multiarch-k8s"
KUBERNETES_TEMPLATE = REPO / "deployments" / "kubernetes" / "work-pool-template.json"
WORKER_NAME = "multiarch-local-worker"
LIMITS = {"arch-arm64": ("ARM64_LIMIT", 1), "arch-amd64": ("AMD64_LIMIT", 2)}
GLOBAL_LIMITS = {"multiarch-fleet": ("FLEET_LIMIT", 2)}
TRY_DEPLOYMENT = "build-multiarch-image/build"
# Stop order: the worker must not poll a server going away, nor the server lose its database.
SERVICES = ("worker", "server", "postgres")
DATABASE_URL = "PREFECT_SERVER_DATABASE_CONNECTION_URL"
DATABASE_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL", "external": "your database"}


def server_database(settings: Settings) -> str:
    """sqlite or postgres (DB=), or external: a URL of the caller's own in the environment
    (an existing PostgreSQL) that DB=sqlite leaves to the server."""
    if settings.database == "sqlite" and os.environ.get(DATABASE_URL, "").strip():
        return "external"
    return settings.database


def server_service(
    settings: Settings, database_url: str | None = None
) -> supervisor.Service:
    """The server; `database_url` (our PostgreSQL's, with its password) goes into its
    environment alone, never into an argv, a log or the worker's environment."""
    argv = (str(settings.prefect), "server", "start", "--host", HOST, "--port", str(settings.port))
    env = settings.env()
    if database_url is not None:
        env[DATABASE_URL] = database_url
    return supervisor.Service(
        name="server",
        argv=argv,
        state_dir=settings.serve_dir,
        label="the Prefect server",
        port=settings.port,
        host=HOST,
        readiness=f"answering {settings.api_url}/health",
        cwd=REPO,
        env=env,
    )


def worker_service(settings: Settings) -> supervisor.Service:
    argv = (str(settings.prefect), "worker", "start", "--pool", LOCAL_POOL, "--name", WORKER_NAME)
    return supervisor.Service(
        name="worker",
        argv=argv,
        state_dir=settings.serve_dir,
        label="the worker",
        readiness=f"sending heartbeats for pool {LOCAL_POOL}",
        cwd=REPO,
        env=settings.env(),
    )


def database_file(settings: Settings) -> Path:
    """Which database the running server was started on (sqlite, postgres, external)."""
    return settings.serve_dir / "server.database"


def ensure_server(settings: Settings, cluster: postgres.Cluster | None) -> None:
    database = server_database(settings)
    url = cluster.connection_url() if cluster is not None else None
    service = server_service(settings, url)
    if cluster is not None:
        where = cluster.describe()
    elif database == "external":
        where = f"the database of {DATABASE_URL} in your environment"
    else:
        where = f"SQLite in {shown(settings.prefect_home)}"
    where += f", log {shown(service.log_file)}"
    record = supervisor.running(name=service.name, state_dir=service.state_dir)
    if record is not None and record.argv != service.argv:
        raise ServeError(
            f"a server started earlier runs as `{shlex.join(record.argv)}` (pid "
            f"{record.pid}, {service.pid_file}), not on port {settings.port}: `make stop` first"
        )
    if record is not None:
        say(f"prefect server: already running (pid {record.pid}, {where})")
        # It may still be starting (a `make serve` a moment ago): wait as for a new one.
        supervisor.wait_until_ready(
            service, record, timeout_s=settings.timeout_s, ready=lambda: healthy(settings)
        )
        return
    began = time.monotonic()
    record = _start_server(settings, service)
    database_file(settings).write_text(database + "\n", encoding="utf-8")
    say(f"prefect server: started (pid {record.pid}, {where})")
    say(f"prefect server: healthy after {time.monotonic() - began:.1f} s")


def _read_database(settings: Settings) -> str:
    """The running server's database; a server started before this file existed: SQLite."""
    try:
        return database_file(settings).read_text(encoding="utf-8").strip() or "sqlite"
    except OSError:
        return "sqlite"


def _start_server(settings: Settings, service: supervisor.Service) -> supervisor.Record:
    try:
        return supervisor.start(
            service, timeout_s=settings.timeout_s, ready=lambda: healthy(settings)
        )
    except supervisor.PortTaken:
        who = "a Prefect server" if healthy(settings) else "a process"
        who += f" that {shown(service.pid_file)} does not record"
        raise ServeError(
            f"port {settings.port} on {HOST} is already used by {who}; stop it or choose "
            f"another port with PREFECT_PORT=... (`ss -ltnp 'sport = :{settings.port}'` "
            "shows which)"
        ) from None


def ensure_work_pools(settings: Settings) -> None:
    pools = [
        (LOCAL_POOL, ["--type", "process"]),
        (
            KUBERNETES_POOL,
            ["--type", "kubernetes", "--base-job-template", str(KUBERNETES_TEMPLATE)],
        ),
    ]
    for name, options in pools:
        status, _ = api(settings, "GET", f"/work_pools/{name}")
        if status == 200:
            say(f"work pool {name}: exists")
            continue
        cli_or_fail(settings, f"creating work pool {name}", "work-pool", "create", name, *options)
        say(f"work pool {name}: created ({options[1]})")


def ensure_concurrency_limits(settings: Settings) -> None:
    for tag, (variable, default) in LIMITS.items():
        status, body = api(settings, "GET", f"/concurrency_limits/tag/{tag}")
        current = body.get("concurrency_limit") if status == 200 and body else None
        wanted = limit_to_set(variable, default, current)
        if wanted is None:
            say(f"task concurrency limit {tag}: {current} (kept; {variable}=N changes it)")
            continue
        # Creating an existing tag's limit updates it (the server upserts by tag).
        what = f"changing limit {tag}" if current is not None else f"creating limit {tag}"
        cli_or_fail(settings, what, "concurrency-limit", "create", tag, str(wanted))
        done = f"changed from {current}" if current is not None else "created"
        say(f"task concurrency limit {tag}: {wanted} ({done})")


def limit_to_set(variable: str, default: int, current: int | None) -> int | None:
    """The value a limit must be created with or changed to, or None to keep `current`:
    an existing limit is only changed when its variable asks for another value."""
    wanted = int_env(variable, default)
    requested = bool(os.environ.get(variable, "").strip())
    if current is not None and (not requested or current == wanted):
        return None
    return wanted


def ensure_global_limits(settings: Settings) -> None:
    """`multiarch-fleet`: how many images of a fleet run (flows/fleet.py) build at once.

    A global concurrency limit, not a tag limit: the fleet holds a slot around each image's
    whole subflow. FLEET_LIMIT (default 2) sets it when created; when set, it changes it.
    """
    for name, (variable, default) in GLOBAL_LIMITS.items():
        status, body = api(settings, "GET", f"/v2/concurrency_limits/{name}")
        current = body.get("limit") if status == 200 and body else None
        wanted = limit_to_set(variable, default, current)
        if wanted is None:
            say(f"global concurrency limit {name}: {current} (kept; {variable}=N changes it)")
            continue
        if current is None:
            cli_or_fail(settings, f"creating global limit {name}", "global-concurrency-limit",
                        "create", name, "--limit", str(wanted))
            say(f"global concurrency limit {name}: {wanted} (created)")
        else:
            cli_or_fail(settings, f"changing global limit {name}", "global-concurrency-limit",
                        "update", name, "--limit", str(wanted))
            say(f"global concurrency limit {name}: {wanted} (changed from {current})")


def ensure_worker(settings: Settings) -> None:
    service = worker_service(settings)
    record = supervisor.running(name=service.name, state_dir=service.state_dir)
    if record is not None:
        say(f"process worker: already running (pid {record.pid}, log {shown(service.log_file)})")
        return
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    since = time.time()
    record = supervisor.start(
        service,
        timeout_s=settings.timeout_s,
        ready=lambda: worker_heartbeat_since(
            settings, pool=LOCAL_POOL, worker=WORKER_NAME, since=since
        ),
    )
    say(
        f"process worker: started for pool {LOCAL_POOL} (pid {record.pid}, builds in "
        f"{shown(settings.work_dir)}, log {shown(service.log_file)})"
    )
    say(f"process worker: polling {LOCAL_POOL}")


def deploy(settings: Settings) -> None:
    done = prefect_cli(settings, "deploy", "--all")
    log = supervisor.log_file(settings.serve_dir, "deploy")
    log.write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        tail = supervisor.log_tail(log)
        raise ServeError(f"prefect deploy --all failed; last lines of {log}:\n{tail}")
    names = re.findall(r"Deployment '([^']+)' successfully", done.stdout)
    say(f"deployed from prefect.yaml: {', '.join(names) or '(see ' + str(log) + ')'}")


def print_next_steps(settings: Settings) -> None:
    command = [
        f"PREFECT_API_URL={settings.api_url}",
        shown(settings.prefect),
        "deployment",
        "run",
        TRY_DEPLOYMENT,
        "--param",
        'platforms=["linux/amd64","linux/arm64"]',
    ]
    if settings.registry_port != 5000:
        registry = f"{HOST}:{settings.registry_port}"
        command += [
            "--param",
            f"image={registry}/examples/hello:latest",
            "--param",
            "build_args=" + json.dumps({"BASE": f"{registry}/library/busybox:latest"}),
        ]
    command.append("--watch")
    print(
        "\n"
        f"Prefect UI:  {settings.ui_url}\n"
        f"Try it:      {shlex.join(command)}\n"
        f"Stop:        make stop   (worker, server, PostgreSQL; `make down` stops the registry)",
        flush=True,
    )


def serve(settings: Settings) -> int:
    """Start or reuse everything; 1 with the reason on stderr when something fails."""
    try:
        _serve(settings)
    except (ServeError, supervisor.SupervisorError) as error:
        print(f"serve: {error}", file=sys.stderr)
        if isinstance(error, supervisor.StartFailed) and error.timed_out:
            print("serve: MULTIARCH_SERVE_TIMEOUT=<seconds> waits longer", file=sys.stderr)
        return 1
    return 0


def _serve(settings: Settings) -> None:
    if not settings.prefect.is_file():
        raise ServeError(f"{settings.prefect} not found: run `make venv` (or set PREFECT_BIN)")
    settings.serve_dir.mkdir(parents=True, exist_ok=True)
    settings.prefect_home.mkdir(parents=True, exist_ok=True)
    say(f"database: {_database_choice(settings)}")
    _refuse_other_database(settings)
    cluster = postgres.ensure(settings) if settings.database == "postgres" else None
    ensure_server(settings, cluster)
    ensure_work_pools(settings)
    ensure_concurrency_limits(settings)
    ensure_global_limits(settings)
    ensure_worker(settings)
    deploy(settings)
    print_next_steps(settings)


def _database_choice(settings: Settings) -> str:
    database = server_database(settings)
    if database == "postgres":
        return "PostgreSQL (DB=postgres)"
    if database == "external":
        return f"your own, from {DATABASE_URL} in the environment"
    return "SQLite (the default; DB=postgres for PostgreSQL)"


def _refuse_other_database(settings: Settings) -> None:
    """Before anything starts: a running server on the other database is not switched
    under its worker; the user stops it first."""
    service = server_service(settings)
    record = supervisor.running(name=service.name, state_dir=service.state_dir)
    running_on = _read_database(settings)
    wanted = server_database(settings)
    if record is not None and running_on != wanted:
        raise ServeError(
            f"the Prefect server (pid {record.pid}) runs on "
            f"{DATABASE_NAMES.get(running_on, running_on)}, not {DATABASE_NAMES[wanted]}: "
            f"`make stop` first, then `make serve DB={settings.database}`"
        )


def stop(settings: Settings) -> int:
    for name in SERVICES:
        if name == "postgres":
            stopped = postgres.stop(settings)
        else:
            stopped = supervisor.stop(name=name, state_dir=settings.serve_dir)
        print(f"stop: {name}: {stopped}", flush=True)
    database_file(settings).unlink(missing_ok=True)
    return 0
