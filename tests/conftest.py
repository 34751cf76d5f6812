"""Fixtures every test directory may use, registered once here so that the whole session
shares one instance of each: the registry, base images and Prefect server
(tests/sessions.py), the real test cluster (tests/cluster/fixtures.py), the git
daemon its pods clone from (tests/integration/git_repos.py), and the Go tools crane, regctl
and the referrers registry (tests/tools/fixtures.py)."""

from tests.cluster.fixtures import kube_builder, kube_cluster, kube_session
from tests.integration.git_repos import git_daemon
from tests.sessions import builder_image, debian_base, playground, prefect_server
from tests.tools.fixtures import crane, referrers_registry, regctl

__all__ = ["builder_image", "crane", "debian_base", "git_daemon", "kube_builder", "kube_cluster",
           "kube_session", "playground", "prefect_server", "referrers_registry", "regctl"]
