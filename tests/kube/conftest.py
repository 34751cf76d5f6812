"""Fixtures of the fake-cluster tests (see `fixtures.py`)."""

from tests.kube.fixtures import kube_cluster

__all__ = ["kube_cluster"]
