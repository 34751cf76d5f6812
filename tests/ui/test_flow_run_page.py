"""The flow run as a person sees it: Prefect's run page lists one build per platform."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.build import build_multiarch_image
from multiarch.request import RunnerOptions
from tests.integration.conftest import EXAMPLE_HELLO

pytestmark = pytest.mark.integration

PLATFORMS = ["linux/amd64", "linux/arm64"]
# One build per platform and the publish after them; the flow may run more tasks besides
# (pinning the source, checking for changes): those are not what this page test is about.
EXPECTED_BUILDS = {f"build {platform}": "Completed" for platform in PLATFORMS}
EXPECTED_PUBLISH = {"publish": "Completed"}
PAGE_TIMEOUT = 90.0
TASK_RUNS_TAB = "li.p-tab#task-runs"


@pytest.fixture
def flow_run_id(playground, prefect_ui_server, tmp_path: Path):
    """Run the real flow against the UI server; the id of its (completed) flow run."""
    _drain_prefect_senders()
    with temporary_settings({PREFECT_API_URL: prefect_ui_server.api_url}):
        try:
            state = build_multiarch_image(
                image=f"{playground.address}/tests/ui-hello:latest",
                platforms=PLATFORMS,
                context=str(EXAMPLE_HELLO),
                build_args={"BASE": playground.base},
                allow_emulation=True,
                insecure_registry=True,
                runner=RunnerOptions(work_dir=str(tmp_path / "work")),
                return_state=True,
            )
        finally:
            _drain_prefect_senders()
    assert state.is_completed(), state.message
    return state.state_details.flow_run_id


def _drain_prefect_senders() -> None:
    """Flush and stop Prefect's in-process senders of events and logs.

    They outlive a flow run and keep the API they started with, and task runs reach the
    server as events: without a fresh sender, a run after tests/integration's Prefect
    test server would send its task runs there, and this page would list none.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    EventsWorker.drain_all(timeout=60)
    APILogWorker.drain_all(timeout=60)


def test_flow_run_page_shows_one_build_per_platform_and_publish(
    prefect_ui_server, browser, flow_run_id, keep_screenshot
):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page = f"{prefect_ui_server.url}/runs/flow-run/{flow_run_id}"
    browser.get(page)
    wait = WebDriverWait(browser, PAGE_TIMEOUT, poll_frequency=0.5)
    expected = EXPECTED_BUILDS | EXPECTED_PUBLISH

    def rendered_task_runs(driver) -> dict[str, str]:
        """Task run name -> state badge, as listed in the "Task Runs" tab."""
        rows = {}
        for row in driver.find_elements(By.CSS_SELECTOR, ".task-run-list-item"):
            names = row.find_elements(By.CSS_SELECTOR, "a[href*='/runs/task-run/']")
            badges = row.find_elements(By.CSS_SELECTOR, ".state-badge")
            if names and badges:
                rows[names[0].text.strip()] = badges[0].text.strip()
        return rows

    try:
        # The Vue UI renders the run header, the graph (a canvas) and tabs, "Logs" first.
        tab = wait.until(lambda d: _displayed(d.find_elements(By.CSS_SELECTOR, TASK_RUNS_TAB)))
        tab.click()
        wait.until(lambda d: _builds_and_publish(rendered_task_runs(d)) == expected)
    except TimeoutException:
        pass  # the assertions below say what the page showed instead
    finally:
        browser.execute_script("window.scrollTo(0, 0)")
        screenshot = keep_screenshot(browser, "flow-run.png")

    text = browser.find_element(By.TAG_NAME, "body").text
    listed = rendered_task_runs(browser)
    assert _builds_and_publish(listed) == expected, (
        f"{page} did not list one completed build per platform and publish "
        f"(screenshot {screenshot}); it listed {listed} and showed:\n{text}"
    )
    for name in expected:
        assert name in text, f"{name!r} is not visible on {page} (screenshot {screenshot})"
    assert set(listed.values()) == {"Completed"}, listed
    assert f"{len(listed)} Task runs" in text, f"the header does not count {len(listed)} task runs"
    assert screenshot.stat().st_size > 0


def _builds_and_publish(task_runs: dict[str, str]) -> dict[str, str]:
    return {
        name: state
        for name, state in task_runs.items()
        if name.startswith("build ") or name == "publish"
    }


def _displayed(elements: list):
    """The first displayed element, or False so that WebDriverWait keeps waiting."""
    return next((e for e in elements if e.is_displayed()), False)
