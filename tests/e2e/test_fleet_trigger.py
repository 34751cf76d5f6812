"""The fleet's deployments as `make serve` deploys them: the nightly run through the CLI,
and the event trigger that rebuilds a base's dependents when the base is published."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import RUN_TIMEOUT_S, run_deployment
from tests.integration.conftest import tag_digest

pytestmark = pytest.mark.e2e

DEPENDENT = "ARG FLEET_BASE\nFROM ${FLEET_BASE}\nRUN echo dependent > /etc/dependent\n"


def write_catalog(tmp_path: Path, playground) -> Path:
    """One image built FROM the base the test publishes, on the test registry."""
    (tmp_path / "dependent").mkdir()
    (tmp_path / "dependent" / "Containerfile").write_text(DEPENDENT)
    catalog = tmp_path / "images.yaml"
    catalog.write_text(yaml.safe_dump({
        "defaults": {"platforms": ["linux/amd64", "linux/arm64"], "allow_emulation": True,
                     "insecure_registry": True,
                     "supply_chain": {"sbom": False, "provenance": False}},
        "images": [{"name": "dependent",
                    "image": f"{playground.address}/e2e-fleet/dependent:latest",
                    "context": "dependent",
                    "build_args": {"FLEET_BASE": f"{playground.address}/e2e-fleet/base:latest"}}],
    }))
    return catalog


def fleet_runs(stack, deployment_id: str) -> list[dict]:
    return stack.api("POST", "/flow_runs/filter",
                     {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}})


def test_fleet_deployments_schedule_and_trigger(stack):
    nightly = stack.deployment("nightly", flow="rebuild-fleet")
    dependents = stack.deployment("dependents", flow="rebuild-fleet")
    for deployment in (nightly, dependents):
        assert deployment["entrypoint"] == "flows/fleet.py:rebuild_fleet"
        assert deployment["parameters"] == {"catalog": "examples/fleet/images.yaml"}
        assert deployment["work_pool_name"] == "multiarch-local"
    [schedule] = nightly["schedules"]
    assert (schedule["schedule"]["cron"], schedule["schedule"]["timezone"]) == ("0 2 * * *",
                                                                                  "UTC")
    automations = [a for a in stack.api("POST", "/automations/filter", {})
                   if any(action.get("deployment_id") == dependents["id"]
                          for action in a["actions"])]
    [automation] = automations
    trigger = automation["trigger"]
    assert trigger["expect"] == ["multiarch.image.published"]
    assert trigger["match"]["multiarch.subflow"] == "false"
    global_limit = stack.api("GET", "/v2/concurrency_limits/multiarch-fleet")
    assert global_limit["limit"] == 2


def test_publishing_a_base_rebuilds_its_dependents_through_the_trigger(
        stack, playground, tmp_path):
    catalog = write_catalog(tmp_path, playground)
    dependents = stack.deployment("dependents", flow="rebuild-fleet")
    # The event cannot carry a catalog: the deployment's own parameter points at ours.
    _patch(stack, dependents["id"], {"catalog": str(catalog)})
    before = {run["id"] for run in fleet_runs(stack, dependents["id"])}

    base = f"{playground.address}/e2e-fleet/base"
    flow_run_id, done = run_deployment(stack, "build", {
        "image": f"{base}:latest", "build_args": {"BASE": playground.base},
        "supply_chain": {"sbom": False, "provenance": False}}, watch=True)
    assert stack.flow_run(flow_run_id)["state"]["type"] == "COMPLETED", done.stdout[-2000:]

    deadline = time.monotonic() + 120
    while not (started := [r for r in fleet_runs(stack, dependents["id"])
                           if r["id"] not in before]):
        assert time.monotonic() < deadline, f"no fleet run from the event\n{stack.logs()}"
        time.sleep(2)
    [run] = started
    assert run["parameters"] == {"catalog": str(catalog), "only_dependents_of": base}
    [run] = stack.wait_for([run["id"]], timeout_s=RUN_TIMEOUT_S)
    assert run["state"]["type"] == "COMPLETED", f"{run['state']['message']}\n{stack.logs()}"
    assert tag_digest(f"{playground.address}/e2e-fleet/dependent:latest") is not None

    # The nightly deployment through the CLI, on the same catalog: already up to date, and
    # its subflow's publishes (none here) could never trigger the dependents deployment.
    nightly_id, done = run_deployment(stack, "nightly", {"catalog": str(catalog)},
                                      watch=True, flow="rebuild-fleet")
    nightly = stack.flow_run(nightly_id)
    assert nightly["state"]["type"] == "COMPLETED", f"{done.stdout[-2000:]}\n{stack.logs()}"
    assert done.returncode == 0
    assert "1 up to date" in nightly["state"]["message"]


def _patch(stack, deployment_id: str, parameters: dict) -> None:
    import httpx

    with httpx.Client(base_url=stack.api_url, timeout=30, trust_env=False) as client:
        response = client.patch(f"/deployments/{deployment_id}",
                                json={"parameters": parameters})
    response.raise_for_status()
