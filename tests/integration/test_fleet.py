"""rebuild-fleet against the real registry and a Prefect server: dependency order,
up to date on a second run, exactly the affected images after an upstream base moved,
a failure that skips only its dependents, and a cycle refused before any build."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from uuid import UUID

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectAlreadyExists

from flows.fleet import FLEET_LIMIT, rebuild_fleet
from multiarch.fleet import FleetFailed
from multiarch.orchestrate import build_and_publish
from multiarch.request import BuildRequest, RunnerOptions
from tests.integration.conftest import tag_digest
from tests.integration.prefect_queries import artifact_data, task_runs

pytestmark = pytest.mark.integration

CONTAINERFILES = {
    "base": "ARG UPSTREAM\nFROM ${UPSTREAM}\nRUN echo base > /etc/fleet-base\n",
    "app-a": "ARG FLEET_BASE\nFROM ${FLEET_BASE}\nRUN echo a > /etc/app-a\n",
    "app-b": "ARG FLEET_BASE\nFROM ${FLEET_BASE}\nRUN echo b > /etc/app-b\n",
    "app-c": "ARG APP_A\nFROM ${APP_A}\nRUN echo c > /etc/app-c\n",
    "tool": "FROM scratch\nCOPY tool.txt /tool.txt\n",
}


class _Quiet:
    def info(self, msg: str, /) -> None:
        pass


@pytest.fixture(scope="module")
def fleet_limit(prefect_server) -> int:
    """The global limit `make serve` creates; 2 images at once, as its default."""
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=FLEET_LIMIT, limit=2))
    return 2


def push_upstream(playground, tmp_path: Path, *, version: str) -> str:
    """The base's own base, ours to move: re-pushing it is "upstream fixed its image"."""
    context = tmp_path / f"upstream-{version}"
    context.mkdir()
    (context / "Containerfile").write_text(
        f"ARG BASE\nFROM ${{BASE}}\nRUN echo {version} > /etc/upstream-version\n")
    return build_and_publish(BuildRequest(
        image=f"{playground.address}/fleet-tests/upstream:latest",
        platforms=("linux/amd64", "linux/arm64"), context=str(context),
        build_args={"BASE": playground.base}, allow_emulation=True, insecure_registry=True,
        runner=RunnerOptions(work_dir=str(tmp_path / f"w-{version}")),
    ), log=_Quiet()).index_digest


def write_catalog(tmp_path: Path, registry: str, files: dict[str, str],
                  build_args: dict[str, str]) -> Path:
    """A catalog in tmp_path, contexts next to it (relative, as a user writes them)."""
    images = []
    for name, text in files.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "Containerfile").write_text(text)
        if "COPY tool.txt" in text:
            (tmp_path / name / "tool.txt").write_text("a tool\n")
        images.append({"name": name, "image": f"{registry}/fleet-tests/{name}:latest",
                       "context": name})
    catalog = tmp_path / "images.yaml"
    catalog.write_text(yaml.safe_dump({
        "defaults": {
            "platforms": ["linux/amd64", "linux/arm64"],
            "allow_emulation": True,
            "insecure_registry": True,
            "build_args": build_args,
            # Fewer seconds per build: the attachments are tested elsewhere.
            "supply_chain": {"sbom": False, "provenance": False},
            "runner": {"work_dir": str(tmp_path / "work")},
        },
        "images": images,
    }))
    return catalog


def run_fleet(catalog: Path) -> tuple[object, dict[str, object], float]:
    began = time.monotonic()
    state = rebuild_fleet(catalog=str(catalog), return_state=True)
    elapsed = time.monotonic() - began
    result = state.result(raise_on_failure=False)
    if isinstance(result, FleetFailed):  # a failed run's result: every image's outcome
        result = result.result
    images = {o.name: o for o in result.images} if hasattr(result, "images") else {}
    return state, images, elapsed


def windows(images: dict) -> dict[str, tuple]:
    with get_client(sync_client=True) as client:
        runs = {name: client.read_flow_run(UUID(o.flow_run_id)) for name, o in images.items()}
    return {name: (run.start_time, run.end_time) for name, run in runs.items()}


def test_fleet_rebuilds_in_order_then_up_to_date_then_exactly_the_affected(
        playground, prefect_server, fleet_limit, tmp_path):
    registry = playground.address
    push_upstream(playground, tmp_path, version="v1")
    catalog = write_catalog(tmp_path, registry, CONTAINERFILES, {
        "UPSTREAM": f"{registry}/fleet-tests/upstream:latest",
        "FLEET_BASE": f"{registry}/fleet-tests/base:latest",
        "APP_A": f"{registry}/fleet-tests/app-a:latest",
    })

    state, first, first_s = run_fleet(catalog)
    assert state.is_completed(), state.message
    assert {n: o.decision for n, o in first.items()} == dict.fromkeys(CONTAINERFILES, "rebuilt")
    for name, outcome in first.items():
        assert tag_digest(f"{registry}/fleet-tests/{name}:latest") == outcome.digest
    when = windows(first)
    assert when["app-a"][0] >= when["base"][1], when
    assert when["app-b"][0] >= when["base"][1], when
    assert when["app-c"][0] >= when["app-a"][1], when
    table = [d for d in artifact_data(state.state_details.flow_run_id) if "app-c" in d]
    assert table and "rebuilt" in table[0]

    state, second, second_s = run_fleet(catalog)
    assert state.is_completed(), state.message
    assert {n: o.decision for n, o in second.items()} == dict.fromkeys(CONTAINERFILES,
                                                                       "up to date")
    for name, outcome in second.items():
        assert outcome.digest == first[name].digest
        runs = task_runs(UUID(outcome.flow_run_id))
        assert not any(run.startswith("build ") or run == "publish" for run in runs), runs

    push_upstream(playground, tmp_path, version="v2")
    state, third, third_s = run_fleet(catalog)
    assert state.is_completed(), state.message
    assert {n: o.decision for n, o in third.items()} == {
        "base": "rebuilt", "app-a": "rebuilt", "app-b": "rebuilt", "app-c": "rebuilt",
        "tool": "up to date"}
    assert third["tool"].digest == first["tool"].digest
    assert all(third[n].digest != first[n].digest for n in ("base", "app-a", "app-b", "app-c"))
    print(f"\nfleet runs: first {first_s:.1f} s, second {second_s:.1f} s, "
          f"after the upstream re-push {third_s:.1f} s")


def test_a_failing_image_skips_its_dependents_and_fails_the_run(
        playground, prefect_server, fleet_limit, tmp_path):
    registry = playground.address
    catalog = write_catalog(tmp_path, registry, {
        "broken": "ARG BASE\nFROM ${BASE}\nRUN exit 3\n",
        "on-broken": "ARG BROKEN\nFROM ${BROKEN}\nRUN true\n",
        "fine": "FROM scratch\nCOPY tool.txt /tool.txt\n",
    }, {"BASE": playground.base, "BROKEN": f"{registry}/fleet-tests/broken:latest"})

    state, images, _ = run_fleet(catalog)
    assert state.is_failed()
    assert state.message == ("2 of 3 images not published; failed: broken; skipped because a "
                             "base failed: on-broken"), state.message
    # Awaited as a deployment's worker does: the run's error, with every outcome in it.
    with pytest.raises(FleetFailed) as failed:
        state.result()
    assert {o.name: o.decision for o in failed.value.result.images} == {
        "broken": "failed", "on-broken": "skipped", "fine": "rebuilt"}
    assert images["fine"].decision == "rebuilt"
    assert tag_digest(f"{registry}/fleet-tests/fine:latest") == images["fine"].digest
    assert images["on-broken"].decision == "skipped"
    assert images["on-broken"].flow_run_id is None  # never started
    assert tag_digest(f"{registry}/fleet-tests/on-broken:latest") is None
    table = [d for d in artifact_data(state.state_details.flow_run_id) if "on-broken" in d]
    assert table and "skipped: broken failed" in table[0]


def test_a_cycle_is_refused_before_any_build(playground, prefect_server, fleet_limit,
                                             tmp_path):
    registry = playground.address
    catalog = write_catalog(tmp_path, registry, {
        "loop-a": "ARG B\nFROM ${B}\n",
        "loop-b": "ARG A\nFROM ${A}\n",
    }, {"A": f"{registry}/fleet-tests/loop-a:latest",
        "B": f"{registry}/fleet-tests/loop-b:latest"})
    state = rebuild_fleet(catalog=str(catalog), return_state=True)
    assert state.is_failed()
    assert "catalog cycle: loop-a -> loop-b -> loop-a" in state.message, state.message
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(
                any_=[state.state_details.flow_run_id])))
    assert children == []
