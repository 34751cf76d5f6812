"""Fixtures every test directory may use: the real test cluster (started on first use,
once per session; see tests/cluster/fixtures.py)."""

from tests.cluster.fixtures import kube_cluster, kube_session

__all__ = ["kube_cluster", "kube_session"]
