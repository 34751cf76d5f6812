"""Fixtures every test directory may use: the real test cluster (started on first use,
once per session; see tests/cluster/fixtures.py) and the git daemon its pods clone from
(tests/integration/git_repos.py)."""

from tests.cluster.fixtures import kube_cluster, kube_session
from tests.integration.git_repos import git_daemon

__all__ = ["git_daemon", "kube_cluster", "kube_session"]
