"""Fixtures: one real cluster per test session, shared by the tests that need it.

Starting the control plane takes seconds, so a session starts it once (state under the
session's temporary directory, ports picked at start), applies deployments/kubernetes with
`kubectl apply -k` as a user would, and gives the runner a token of the bundle's own
ServiceAccount: every test then runs with exactly the Role we ship. Each test gets the
cluster with its failure hooks reset and must leave no Job or pod behind.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import controlplane
from tests.cluster.handle import Cluster


@pytest.fixture(scope="session")
def kube_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state_dir = tmp_path_factory.mktemp("cluster")
    state = controlplane.up(state_dir, nfs_exports={
        controlplane.BUNDLE_NFS_EXPORT: state_dir / "nfs"})
    try:
        cluster = Cluster(state)
        cluster.apply_bundle()
        cluster.write_runner_kubeconfig()
        yield cluster
    finally:
        controlplane.down(state_dir)


@pytest.fixture
def kube_cluster(kube_session: Cluster) -> Iterator[Cluster]:
    """The session's cluster; fails the test if the node agents themselves failed (a bug
    in the agent must not pass as a runner's success or failure) or if a Job or pod was
    left behind."""
    kube_session.reset_hooks()
    kube_session.test_started = time.time()
    errors_before = len(kube_session.agent_errors)
    yield kube_session
    kube_session.reset_hooks()
    errors = kube_session.agent_errors[errors_before:]
    assert not errors, f"a node agent itself failed: {errors!r}"
    assert_nothing_left(kube_session)


@pytest.fixture
def kube_builder(kube_cluster: Cluster, builder_image: str) -> Cluster:
    """The test's cluster with `builder_image` set to the builder image of this checkout
    in the session registry (tests/sessions.py): what build, publish and flow-run pods
    run, as on a user's cluster."""
    kube_cluster.builder_image = builder_image
    return kube_cluster


def assert_nothing_left(cluster: Cluster) -> None:
    """Jobs are deleted with Background propagation: their pods go shortly after."""
    assert cluster.jobs() == [], "a Job was left behind"
    cluster.wait_for(lambda: cluster.pods() == [], timeout=30, what="pods to be deleted")


def nfs_dir(cluster: Cluster) -> Path:
    """The directory that serves the bundle's NFS PersistentVolume."""
    return Path(cluster.state.nfs_exports[controlplane.BUNDLE_NFS_EXPORT])
