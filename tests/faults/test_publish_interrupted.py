"""Stopped in the middle of writing tags: SIGTERM, a Prefect cancel, SIGKILL then `multiarch gc`.

The fault proxy holds the PUT of the second tag for a few seconds, so the stop lands while
the first tag already holds the new index and the second does not: the moment tags would
split. A signal or a cancel must leave every tag where it was before the run (the run is
cancelled, so it publishes nothing); after a SIGKILL nobody is left to do that, and the
sweep (`multiarch gc`, or the next run) puts them back from the run's tag journal.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.faults.fault_proxy import Hook
from tests.faults.test_publish_faults import (
    REPO_ROOT,
    TAG_PUT,
    assert_clean,
    build,
    context_dir,
    finish,
    held,
    repository,
    start_cli,
)

pytestmark = pytest.mark.integration

HOLD_S = 4.0  # how long the proxy holds the second tag's PUT
EXIT_WITHIN_S = 30


class HeldPut:
    """A proxy hook: note that the second tag's PUT arrived, then hold it a while."""

    def __init__(self) -> None:
        self.arrived = threading.Event()

    def __call__(self) -> None:
        self.arrived.set()
        time.sleep(HOLD_S)


def published_first(playground, proxy, tmp_path: Path, work: Path, api_url: str,
                    name: str) -> tuple[str, str, str]:
    """Tags a and b at a first index; returns (image via proxy, image direct, digest)."""
    image, path = repository(proxy.address, name)
    first = build(image, ["a", "b"], tmp_path=tmp_path, base=playground.base, work=work,
                  api_url=api_url)
    assert first.code == 0, first.output[-3000:]
    assert first.digest
    return image, f"{playground.address}/{path}", first.digest


def flow_run_of(api_url: str, image: str) -> dict:
    runs = httpx.post(f"{api_url}/flow_runs/filter", json={"sort": "START_TIME_DESC",
                      "limit": 20}, timeout=10).json()
    return next(run for run in runs if run["parameters"].get("image") == f"{image}:a")


@pytest.mark.parametrize("how", ["sigterm", "prefect-cancel"])
def test_stop_while_writing_tags_puts_every_tag_back_and_ends_cancelled(
    playground, prefect_server, proxy, tmp_path, work, how, record_scenario
):
    image, direct, before = published_first(playground, proxy, tmp_path, work,
                                            prefect_server, f"stop-{how}")
    hold = HeldPut()
    proxy.add("PUT", TAG_PUT + "b$", Hook(hold), nth=1)
    run = start_cli(image=image, tags=["a", "b"], context=context_dir(tmp_path, playground.base),
                    work=work, api_url=prefect_server)
    assert hold.arrived.wait(300), run.log.read_text()[-3000:]
    assert held(direct, ["a"])["a"] != before  # the first tag moved: the split moment
    stopped = time.monotonic()
    if how == "sigterm":
        run.process.send_signal(signal.SIGTERM)
    else:
        flow_run = flow_run_of(prefect_server, image)
        httpx.post(f"{prefect_server}/flow_runs/{flow_run['id']}/set_state",
                   json={"state": {"type": "CANCELLING", "name": "Cancelling"}},
                   timeout=10).raise_for_status()
    outcome = finish(run, timeout=EXIT_WITHIN_S + HOLD_S)
    took = time.monotonic() - stopped
    assert outcome.code == (128 + signal.SIGTERM if how == "sigterm" else 1), outcome.output
    assert held(direct, ["a", "b"]) == {"a": before, "b": before}
    assert "cancelled while writing tags: every tag is back where it was" in outcome.output
    state = flow_run_of(prefect_server, image)["state"]
    assert state["type"] == "CANCELLED", state
    assert_clean(work)
    record_scenario(
        f"{'SIGTERM to `multiarch build`' if how == 'sigterm' else 'Prefect cancel'} while "
        "it writes tags (the 1st tag moved, the 2nd tag's PUT in flight)",
        f"the signal is held until the tag write in flight ends, then every tag is put back; "
        f"the flow run ends Cancelled; exit {outcome.code} {took:.1f} s after the stop",
        "both tags hold the index they held before the run; nothing under the work directory",
    )


def test_sigkill_while_writing_tags_then_gc_puts_the_tags_back(
    playground, prefect_server, proxy, tmp_path, work, record_scenario
):
    image, direct, before = published_first(playground, proxy, tmp_path, work,
                                            prefect_server, "kill")
    hold = HeldPut()
    proxy.add("PUT", TAG_PUT + "b$", Hook(hold), nth=1)
    run = start_cli(image=image, tags=["a", "b"], context=context_dir(tmp_path, playground.base),
                    work=work, api_url=prefect_server)
    assert hold.arrived.wait(300), run.log.read_text()[-3000:]
    run.process.kill()
    run.process.wait(timeout=EXIT_WITHIN_S)
    # The PUT in flight still lands after its sender died: wait for the proxy to pass it.
    end = time.monotonic() + HOLD_S + 10
    while time.monotonic() < end and not any("/manifests/b -> 201" in s for s in proxy.seen):
        time.sleep(0.2)
    moved = held(direct, ["a", "b"])
    assert moved["a"] != before, "the killed run had moved a tag"
    done = subprocess.run(
        [sys.executable, "-m", "multiarch.cli", "gc", "--work-dir", str(work)],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PREFECT_API_URL": prefect_server},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tags put back" in done.stdout, done.stdout
    assert held(direct, ["a", "b"]) == {"a": before, "b": before}
    assert flow_run_of(prefect_server, image)["state"]["type"] == "CRASHED"
    assert_clean(work)
    record_scenario(
        "SIGKILL of `multiarch build` while it writes tags, then `multiarch gc`",
        "the killed run leaves the tags split (a: new index, b: old, or both new once the "
        "PUT in flight lands); gc finds the run dead, reads its tag journal and, under the "
        "repository's publish lock, puts back every tag still holding the dead run's index; "
        "the flow run is marked Crashed",
        "both tags hold the index they held before the run; nothing under the work directory",
    )
