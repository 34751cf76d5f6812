"""The kubernetes runner against a registry as users run it: TLS with a private CA and
basic auth, reached from build and publish pods of the test cluster (tests/cluster) with
nothing but what the deployment names: a `kubernetes.io/dockerconfigjson` Secret mounted
as a file (runner.kubernetes.registry_secret), the CA from a ConfigMap
(registry_ca_configmap), and a build secret from a Secret (build_secrets), which a
`RUN --mount=type=secret` step reads. This machine itself trusts neither the CA nor holds
the login: only the pods can push. No value reaches a Job spec.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.build import build_multiarch_image
from tests.cluster.fixtures import assert_nothing_left
from tests.cluster.pki import Authority
from tests.integration.conftest import file_in_dir_copy
from tests.integration.git_repos import make_repo
from tests.secure_registries import SecureRegistry, htpasswd_auth, tls_registry

pytestmark = pytest.mark.integration

USER, PASSWORD = "builder", "kube-pw-4Rt9"
SECRET_VALUE = "npm-token-Vb82-never-in-a-spec"
CONTAINERFILE = """\
ARG BASE
FROM ${BASE}
RUN --mount=type=secret,id=npm sha256sum /run/secrets/npm | cut -d' ' -f1 > /npm-digest
RUN uname -m > /built-arch
"""


def cert_dir(directory: Path, ca: Path) -> Path:
    """A directory holding only `ca.crt`: skopeo's --cert-dir, for this test's own calls."""
    directory.mkdir(parents=True)
    (directory / "ca.crt").write_bytes(ca.read_bytes())
    return directory


def skopeo(*argv: str, home: Path) -> None:
    subprocess.run(["skopeo", *argv], check=True, capture_output=True, timeout=300,
                   env={"PATH": "/usr/bin:/bin", "HOME": str(home)})


@pytest.fixture
def registry(tmp_path: Path, playground) -> Iterator[SecureRegistry]:
    authority = Authority(tmp_path / "ca")
    (tmp_path / "reg").mkdir()
    auth = htpasswd_auth(tmp_path / "reg" / "htpasswd", {USER: PASSWORD})
    with tls_registry(tmp_path / "reg", authority, auth=auth) as served:
        # the base goes in with the CA and login given to this one command only
        skopeo("copy", "--quiet", "--all", "--src-tls-verify=false",
               "--dest-cert-dir", str(cert_dir(tmp_path / "ca-dir", served.ca)),
               "--dest-creds", f"{USER}:{PASSWORD}", f"docker://{playground.base}",
               f"docker://{served.address}/library/busybox:latest", home=tmp_path)
        yield served


def pulled(reference: str, path: str, registry: SecureRegistry, scratch: Path) -> bytes:
    """A file of a pushed image, read with the CA and login given to skopeo alone."""
    skopeo("copy", "--quiet", "--src-cert-dir", str(cert_dir(scratch / "certs", registry.ca)),
           "--src-creds", f"{USER}:{PASSWORD}", f"docker://{reference}",
           f"dir:{scratch / 'image'}", home=scratch)
    return file_in_dir_copy(scratch / "image", path)


@pytest.mark.parametrize("handoff", ["registry", "shared"])
def test_pods_push_to_a_tls_registry_with_the_ca_from_a_config_map_and_a_mounted_login(
        git_daemon, kube_builder, registry, prefect_server, tmp_path, handoff):
    cluster = kube_builder
    context = make_repo(git_daemon, tmp_path / "repo", CONTAINERFILE)
    login = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config = json.dumps({"auths": {registry.address: {"auth": login}}})
    cluster.create_secret("registry-login", type="kubernetes.io/dockerconfigjson",
                          data={".dockerconfigjson": config})
    cluster.create_config_map("registry-ca", data={"ca.crt": registry.ca.read_text()})
    cluster.create_secret("npm-token", data={"npm": SECRET_VALUE})
    image = f"{registry.address}/team/kube-tls-{handoff}"
    try:
        state = build_multiarch_image(
            image=f"{image}:1", platforms=["linux/amd64", "linux/arm64"], context=context,
            build_args={"BASE": f"{registry.address}/library/busybox:latest"},
            handoff=handoff,
            runner={"kind": "kubernetes", "timeout_s": 600, "kubernetes": {
                "kubeconfig": str(cluster.kubeconfig), "namespace": cluster.namespace,
                "builder_image": cluster.builder_image, "unschedulable_grace_s": 2,
                "registry_secret": "registry-login", "registry_ca_configmap": "registry-ca",
                "build_secrets": {"npm": "npm-token"}}},
            return_state=True)
    finally:
        cluster.delete_secret("registry-login")
        cluster.delete_secret("npm-token")
        cluster.delete_config_map("registry-ca")
    assert state.is_completed(), state.message
    result = state.result()
    assert {(a.subject, a.kind) for a in result.attestations} >= {
        (p, k) for p in ("linux/amd64", "linux/arm64") for k in ("sbom", "provenance")}
    expected = hashlib.sha256(SECRET_VALUE.encode()).hexdigest()
    for platform in result.platforms:
        scratch = tmp_path / platform.platform.slug
        reference = f"{image}@{platform.digest}"
        assert pulled(reference, "/npm-digest", registry, scratch).decode().strip() == expected
        machine = {"amd64": "x86_64", "arm64": "aarch64"}[platform.platform.architecture]
        assert pulled(reference, "/built-arch", registry,
                      scratch / "again").decode().strip() == machine
    jobs = json.dumps(cluster.created_jobs())
    for value in (SECRET_VALUE, PASSWORD, login, registry.ca.read_text().splitlines()[1]):
        assert value not in jobs
    assert_nothing_left(cluster)
