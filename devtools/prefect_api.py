"""Talking to the local Prefect server of `make serve`: its REST API and its CLI.

urllib rather than httpx: no proxy from the environment may intercept 127.0.0.1, and the
server may not answer yet, which is a normal state here, not an error.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

from devtools.serve_config import REPO, ServeError, Settings

_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def api(settings: Settings, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """(status, JSON body) of one API call; status 0 when nothing answers."""
    data = None if body is None else json.dumps(body).encode()
    # Always http://127.0.0.1:<port>/api/...: built here, never from user input.
    request = urllib.request.Request(  # noqa: S310
        f"{settings.api_url}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with _HTTP.open(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, None
    except (OSError, ValueError):
        return 0, None


def healthy(settings: Settings) -> bool:
    status, body = api(settings, "GET", "/health")
    return status == 200 and body is True


def prefect_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(settings.prefect), "--no-prompt", *args],
        cwd=REPO,
        env=settings.env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def cli_or_fail(settings: Settings, what: str, *args: str) -> str:
    done = prefect_cli(settings, *args)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise ServeError(f"{what} failed: prefect {shlex.join(args)}:\n{output}")
    return done.stdout


def worker_heartbeat_since(settings: Settings, *, pool: str, worker: str, since: float) -> bool:
    """True once `worker` of `pool` reported a heartbeat at or after `since` (epoch s)."""
    status, workers = api(settings, "POST", f"/work_pools/{pool}/workers/filter", {})
    if status != 200 or not isinstance(workers, list):
        return False
    for found in workers:
        if found.get("name") != worker or not found.get("last_heartbeat_time"):
            continue
        beat = _parse_time(found["last_heartbeat_time"])
        if beat is not None and beat >= since - 1:
            return True
    return False


def _parse_time(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
