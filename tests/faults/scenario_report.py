"""Record what each fault scenario did, for the table in docs/reliability.md.

Each scenario calls `record_scenario(name, what_happens, what_is_left)` once it has checked
its invariants; with MULTIARCH_FAULT_REPORT set, one JSON line per scenario is appended to
that file and `python -m tests.faults.report` turns the file into the table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

REPORT_ENV = "MULTIARCH_FAULT_REPORT"


def append(entry: dict[str, str]) -> None:
    path = os.environ.get(REPORT_ENV)
    if path:
        with Path(path).open("a") as report:
            report.write(json.dumps(entry) + "\n")


@pytest.fixture
def record_scenario(request: pytest.FixtureRequest) -> Callable[[str, str, str], None]:
    def record(scenario: str, what_happens: str, what_is_left: str) -> None:
        append({"kind": "scenario", "test": request.node.name, "scenario": scenario,
                "what happens": what_happens, "what is left": what_is_left})

    return record
