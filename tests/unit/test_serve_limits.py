"""`make serve` keeps an operator's limits unless asked to change them (devtools.serve)."""

from __future__ import annotations

import pytest

from devtools.serve import limit_to_set


def test_a_missing_limit_is_created_with_the_default_or_the_variable(monkeypatch):
    monkeypatch.delenv("FLEET_LIMIT", raising=False)
    assert limit_to_set("FLEET_LIMIT", 2, None) == 2
    monkeypatch.setenv("FLEET_LIMIT", "3")
    assert limit_to_set("FLEET_LIMIT", 2, None) == 3


def test_an_existing_limit_changes_only_when_its_variable_asks(monkeypatch):
    monkeypatch.delenv("FLEET_LIMIT", raising=False)
    assert limit_to_set("FLEET_LIMIT", 2, 5) is None  # set by hand in the UI: kept
    monkeypatch.setenv("FLEET_LIMIT", "5")
    assert limit_to_set("FLEET_LIMIT", 2, 5) is None
    monkeypatch.setenv("FLEET_LIMIT", "1")
    assert limit_to_set("FLEET_LIMIT", 2, 5) == 1


def test_a_limit_that_is_not_a_number_is_refused_naming_the_variable(monkeypatch):
    from devtools.serve_config import ServeError

    monkeypatch.setenv("FLEET_LIMIT", "two")
    with pytest.raises(ServeError, match="FLEET_LIMIT='two' is not a whole number"):
        limit_to_set("FLEET_LIMIT", 2, None)
