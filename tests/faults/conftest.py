"""Fixtures of the fault scenarios: the integration suite's real registry and Prefect server."""

from tests.faults.scenario_report import record_scenario
from tests.integration.conftest import playground, prefect_server

__all__ = ["playground", "prefect_server", "record_scenario"]
