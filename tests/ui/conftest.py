"""A real Prefect server with its UI, and headless Chromium to look at it.

The server is `prefect server start` in its own PREFECT_HOME (SQLite) on a free port,
owned by the tests and stopped afterwards. The browser is Debian's Chromium driven by
Selenium through Debian's chromedriver (same version as the browser, nothing downloaded).
A missing browser fails the test with how to install it: UI tests are never skipped.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devtools.registry import free_port
from tests.sessions import REPO_ROOT

SERVER_STARTUP_TIMEOUT = 120.0
INSTALL_HINT = (
    "install the browser with `scripts/install-deps` "
    "(or `apt-get install -y chromium chromium-driver`) and the Python packages with "
    "`pip install -e '.[test]'`"
)
# As root, in a sandbox with no network but the package registries: no sandbox, no GPU,
# and none of Chromium's background connections (they are refused and slow it down).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1600,1400",
)

_SCREENSHOTS = pytest.StashKey[list[Path]]()


@dataclass(frozen=True)
class PrefectUIServer:
    url: str
    home: Path
    log: Path

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"


@pytest.fixture(scope="session")
def prefect_ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectUIServer]:
    """`prefect server start` (API and UI) on 127.0.0.1; yields where it listens."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        # The UI asks this URL for its data; without it, it would try port 4200.
        PREFECT_UI_API_URL=f"{url}/api",
    )
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
    command += ["--port", str(port)]
    log = home / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            command,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        _wait_healthy(server, f"{url}/api/health", log)
        yield PrefectUIServer(url=url, home=home, log=log)
    finally:
        _stop(server)


def _wait_healthy(server: subprocess.Popen[bytes], health: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"prefect server exited with {server.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(health, timeout=5, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"prefect server not healthy after {SERVER_STARTUP_TIMEOUT:.0f} s:\n{_tail(log)}")


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is not None:
        return
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
    except ProcessLookupError:
        pass


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as err:
        return f"(no log: {err})"


def _which(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture
def browser(tmp_path: Path):
    """Headless Chromium (Selenium WebDriver) with a new, empty profile."""
    chromium = _which("chromium", "chromium-browser")
    chromedriver = _which("chromedriver")
    tools = {"chromium": chromium, "chromedriver": chromedriver}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        pytest.fail(f"UI test needs {' and '.join(missing)} on PATH: {INSTALL_HINT}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as err:
        pytest.fail(f"UI test needs selenium ({err}): {INSTALL_HINT}")

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    options.add_argument(f"--user-data-dir={profile}")
    # An explicit driver path: Selenium Manager (which would download one) never runs.
    service = Service(executable_path=chromedriver, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def artifacts_dir() -> Path:
    """Where screenshots are kept: $MULTIARCH_TEST_ARTIFACTS, else .local/test-artifacts."""
    configured = os.environ.get("MULTIARCH_TEST_ARTIFACTS")
    path = Path(configured) if configured else REPO_ROOT / ".local" / "test-artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def keep_screenshot(request: pytest.FixtureRequest, artifacts_dir: Path):
    """Save the browser's viewport as `<artifacts>/<name>` and list it after the run."""

    def keep(driver, name: str) -> Path:
        path = artifacts_dir / name
        if not driver.save_screenshot(str(path)):
            raise AssertionError(f"Chromium could not write the screenshot {path}")
        request.config.stash.setdefault(_SCREENSHOTS, []).append(path)
        print(f"screenshot: {path}")
        return path

    return keep


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    screenshots = config.stash.get(_SCREENSHOTS, [])
    if screenshots:
        terminalreporter.section("UI screenshots")
        for path in screenshots:
            terminalreporter.write_line(str(path))
