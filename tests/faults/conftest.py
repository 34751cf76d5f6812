"""Fixtures of the fault scenarios: a fault proxy in front of the session's registry
(tests/sessions.py), the scenario report, and a work directory per test."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.fault_proxy import FaultProxy
from tests.faults.scenario_report import record_scenario

__all__ = ["proxy", "record_scenario", "work"]


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
