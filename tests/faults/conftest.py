"""Fixtures of the fault scenarios: the integration suite's real registry and Prefect server,
a fault proxy in front of that registry, and a work directory per test."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.fault_proxy import FaultProxy
from tests.faults.scenario_report import record_scenario
from tests.integration.conftest import playground, prefect_server

__all__ = ["playground", "prefect_server", "proxy", "record_scenario", "work"]


@pytest.fixture
def proxy(playground) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy(upstream=playground.address).start()
    yield fault_proxy
    fault_proxy.stop()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path
