"""The `kube_cluster` fixture: a fresh fake cluster per test, stopped and checked after it.

Registered for tests/kube by its conftest; tests elsewhere import it into their module or
conftest (`from tests.kube.fixtures import kube_cluster`), or call
`tests.kube.cluster.start_fake_cluster` for other nodes, claims or namespaces.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube.cluster import FakeCluster, start_fake_cluster


@pytest.fixture
def kube_cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    """Nodes node-amd64 and node-arm64, namespace `multiarch`, the RWX claim
    `multiarch-shared` backed by `tmp_path / "nfs"`. Fails the test if the fake itself
    failed (a bug in the fake must not pass as a runner's success or failure)."""
    cluster = start_fake_cluster(tmp_path)
    try:
        yield cluster
        errors = cluster.agent_errors
        assert not errors, f"the fake cluster itself failed: {errors!r}"
    finally:
        cluster.stop()
