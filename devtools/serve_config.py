"""Settings of `make serve` / `make stop`, read once from the environment.

Everything runs from argv lists; no value reaches a shell. Settings (environment):

    MULTIARCH_STATE_DIR      state root (default <repo>/.local): Prefect's home and SQLite
                             database in prefect/, pid files and logs in serve/, build
                             scratch space in work/ (unless MULTIARCH_WORK_DIR is set)
    PREFECT_PORT             API and UI port on 127.0.0.1 (default 4200)
    PREFECT_BIN              the prefect executable (default <repo>/.venv/bin/prefect)
    ARM64_LIMIT, AMD64_LIMIT task concurrency limits arch-arm64 / arch-amd64 (defaults 1
                             and 2 when created; when set, an existing limit is changed)
    FLEET_LIMIT              global concurrency limit multiarch-fleet: images of a fleet run
                             building at once (default 2 when created; when set, changed)
    MULTIARCH_REGISTRY_PORT  port of `make up`'s registry, for the printed example (5000)
    MULTIARCH_SERVE_TIMEOUT  seconds to wait for the server and the worker (default 120)
    MULTIARCH_DB             the Prefect server's database: sqlite (default; a file in
                             prefect/) or postgres (our own cluster in postgres/, see
                             devtools.postgres); `make serve DB=postgres`
    MULTIARCH_POSTGRES_PORT  that cluster's port on 127.0.0.1 (default 5433: Debian's own
                             cluster, if any, keeps 5432)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
DATABASES = ("sqlite", "postgres")


class ServeError(Exception):
    """Something could not be started; the message says what and where to look."""


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    port: int
    prefect: Path
    work_dir: Path
    registry_port: int
    timeout_s: float
    database: str = "sqlite"  # one of DATABASES
    postgres_port: int = 5433

    @property
    def prefect_home(self) -> Path:
        return self.state_dir / "prefect"

    @property
    def serve_dir(self) -> Path:
        return self.state_dir / "serve"

    @property
    def ui_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"

    def env(self) -> dict[str, str]:
        """The environment of everything started here: our home, our server, our scratch."""
        env = dict(os.environ)
        env.update(
            PREFECT_HOME=str(self.prefect_home),
            PREFECT_API_URL=self.api_url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            MULTIARCH_WORK_DIR=str(self.work_dir),
        )
        return env


def load_settings(*, state_dir: Path | None = None, registry_port: int | None = None) -> Settings:
    """The environment's settings; `python -m devtools` options, when given, win."""
    state_dir = state_dir or Path(os.environ.get("MULTIARCH_STATE_DIR") or REPO / ".local")
    state_dir = state_dir.resolve()
    work_dir = os.environ.get("MULTIARCH_WORK_DIR") or str(state_dir / "work")
    return Settings(
        state_dir=state_dir,
        port=int_env("PREFECT_PORT", 4200),
        prefect=Path(
            os.environ.get("PREFECT_BIN") or REPO / ".venv" / "bin" / "prefect"
        ).absolute(),
        work_dir=Path(work_dir).resolve(),
        registry_port=registry_port or int_env("MULTIARCH_REGISTRY_PORT", 5000),
        timeout_s=float(int_env("MULTIARCH_SERVE_TIMEOUT", 120)),
        database=database_env(),
        postgres_port=int_env("MULTIARCH_POSTGRES_PORT", 5433),
    )


def database_env() -> str:
    raw = os.environ.get("MULTIARCH_DB", "").strip() or "sqlite"
    if raw not in DATABASES:
        raise ServeError(
            f"DB={raw!r} (MULTIARCH_DB) is not a database make serve runs on: choose "
            f"{' or '.join(DATABASES)} (`make serve DB=postgres`)"
        )
    return raw


def int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ServeError(f"{name}={raw!r} is not a whole number") from None


def shown(path: Path) -> str:
    """A path as the user wants to read it: relative to where they are, when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def say(message: str) -> None:
    print(f"serve: {message}", flush=True)
