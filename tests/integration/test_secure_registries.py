"""Registries as users run them: TLS with a private CA, basic or token auth, mutual TLS.

What a new user does and nothing more: the CA in `/etc/containers/certs.d/HOST:PORT/`,
`skopeo login` as root without XDG_RUNTIME_DIR (so the login lands in
`/run/containers/0/auth.json`), then `multiarch build` with no `--insecure-registry` and no
environment variables. The build pushes signed, with SBOM and provenance; `multiarch verify`
and `crane validate --remote` (what consumers run) pass on what it published.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from multiarch.errors import ConfigurationError
from multiarch.registry_api import check_push_access
from tests.cluster.pki import Authority
from tests.integration.conftest import EXAMPLE_HELLO
from tests.secure_registries import (
    Grant,
    SecureRegistry,
    TokenIssuer,
    htpasswd_auth,
    serving_tokens,
    tls_registry,
    token_auth,
    trusted_in_certs_d,
)

pytestmark = pytest.mark.integration

PRIMARY_AUTH_FILE = Path(f"/run/containers/{os.getuid()}/auth.json")


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a root shell without a login session: no XDG_RUNTIME_DIR."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("XDG_RUNTIME_DIR", "REGISTRY_AUTH_FILE", "SSL_CERT_FILE")}
    return {**env, **extra}


@dataclass(frozen=True)
class LoggedIn:
    registry: SecureRegistry
    user: str
    password: str
    base: str  # the busybox base, copied into this registry


def skopeo_login(address: str, user: str, password: str) -> None:
    done = subprocess.run(["skopeo", "login", "--username", user, "--password-stdin", address],
                          input=password, text=True, capture_output=True, env=user_env(),
                          check=False)
    assert done.returncode == 0, done.stderr
    assert address in json.loads(PRIMARY_AUTH_FILE.read_text())["auths"]


@pytest.fixture(scope="module")
def primary_auth_file() -> Iterator[None]:
    """`skopeo login` writes the host's own file: leave it as it was found."""
    before = PRIMARY_AUTH_FILE.read_bytes() if PRIMARY_AUTH_FILE.exists() else None
    yield
    if before is None:
        PRIMARY_AUTH_FILE.unlink(missing_ok=True)
    else:
        PRIMARY_AUTH_FILE.write_bytes(before)


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("registry-ca"))


def copy_base(playground, registry: SecureRegistry, repository: str) -> str:
    base = f"{registry.address}/{repository}:latest"
    subprocess.run(["skopeo", "copy", "--quiet", "--all", "--src-tls-verify=false",
                    f"docker://{playground.base}", f"docker://{base}"],
                   check=True, capture_output=True, env=user_env())
    return base


@pytest.fixture(scope="module")
def basic_registry(playground, authority, primary_auth_file,
                   tmp_path_factory) -> Iterator[LoggedIn]:
    state = tmp_path_factory.mktemp("tls-basic")
    users = {"alice": "alice-pw-7Hq2"}
    with ExitStack() as stack:
        registry = stack.enter_context(tls_registry(
            state, authority, auth=htpasswd_auth(state / "htpasswd", users)))
        stack.enter_context(trusted_in_certs_d(registry.address, registry.ca))
        skopeo_login(registry.address, "alice", users["alice"])
        yield LoggedIn(registry, "alice", users["alice"],
                       copy_base(playground, registry, "library/busybox"))


@pytest.fixture(scope="module")
def token_registry(playground, authority, primary_auth_file,
                   tmp_path_factory) -> Iterator[tuple[LoggedIn, TokenIssuer]]:
    state = tmp_path_factory.mktemp("tls-token")
    issuer = TokenIssuer(
        signer=authority.issue("token-signer", common_name="token-signer", client=True),
        users={"bob": "bob-pw-Zx81"},
        grants=[Grant("bob", "team/*", ("pull", "push")), Grant("bob", "*", ("pull",))])
    web = authority.issue("token-web", common_name="localhost", server_names=("localhost",))
    with ExitStack() as stack:
        realm = stack.enter_context(serving_tokens(issuer, server=web))
        registry = stack.enter_context(tls_registry(
            state, authority, auth=token_auth(realm, authority.cert_path)))
        stack.enter_context(trusted_in_certs_d(registry.address, registry.ca))
        skopeo_login(registry.address, "bob", "bob-pw-Zx81")
        yield LoggedIn(registry, "bob", "bob-pw-Zx81",
                       copy_base(playground, registry, "team/busybox")), issuer


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("signing")
    assert multiarch("keygen", str(directory)).returncode == 0
    return directory


def multiarch(*args: str, api_url: str | None = None,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = user_env(**({"PREFECT_API_URL": api_url} if api_url else {}), **(env or {}))
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True,
                          text=True, timeout=900, env=env, check=False)


def build(image: str, base: str, *, api_url: str, work: Path, key_dir: Path,
          platforms: tuple[str, ...] = ("linux/amd64", "linux/arm64")
          ) -> subprocess.CompletedProcess[str]:
    return multiarch(
        "build", "--image", image, *(a for p in platforms for a in ("--platform", p)),
        "--context", str(EXAMPLE_HELLO), "--build-arg", f"BASE={base}", "--allow-emulation",
        "--work-dir", str(work), "--sign-key-file", str(key_dir / "signing.key"), "--json",
        api_url=api_url)


def crane_validate(crane: Path, reference: str, login: LoggedIn, scratch: Path) -> None:
    """crane reads neither certs.d nor containers' auth.json: it gets the CA through
    SSL_CERT_FILE and a Docker config of its own."""
    docker = scratch / "docker-config"
    docker.mkdir(exist_ok=True)
    env = user_env(SSL_CERT_FILE=str(login.registry.ca), DOCKER_CONFIG=str(docker))
    subprocess.run([str(crane), "auth", "login", login.registry.address, "-u", login.user,
                    "--password-stdin"], input=login.password, text=True, check=True,
                   capture_output=True, env=env)
    done = subprocess.run([str(crane), "validate", "--remote", reference], text=True,
                          capture_output=True, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS" in done.stdout + done.stderr


def published_and_verified(login: LoggedIn, repository: str, *, prefect_server: str,
                           tmp_path: Path, signing_key: Path, crane: Path) -> dict:
    image = f"{login.registry.address}/{repository}:1"
    done = build(image, login.base, api_url=prefect_server, work=tmp_path / "work",
                 key_dir=signing_key)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert sorted({a["kind"] for a in result["attestations"]}) == ["provenance", "sbom",
                                                                   "signature"]
    checked = multiarch("verify", image, "--key", str(signing_key / "signing.pub"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "verified: nothing missing" in checked.stdout
    crane_validate(crane, image, login, tmp_path)
    return result


def test_a_tls_registry_with_a_private_ca_and_basic_auth_after_skopeo_login(
        basic_registry, prefect_server, tmp_path, signing_key, crane):
    result = published_and_verified(basic_registry, "team/hello", prefect_server=prefect_server,
                                    tmp_path=tmp_path, signing_key=signing_key, crane=crane)
    assert [p["platform"] for p in result["platforms"]] == ["linux/amd64", "linux/arm64"]


def test_a_token_auth_registry_pushes_where_the_token_grants_it(
        token_registry, prefect_server, tmp_path, signing_key, crane):
    login, issuer = token_registry
    published_and_verified(login, "team/hello", prefect_server=prefect_server,
                           tmp_path=tmp_path, signing_key=signing_key, crane=crane)
    asked = {scope for user, scopes in issuer.requests for scope in scopes if user == "bob"}
    assert "repository:team/hello:pull,push" in asked or \
        "repository:team/hello:push,pull" in asked


def test_a_repository_the_token_does_not_cover_fails_before_any_build(
        token_registry, prefect_server, tmp_path, signing_key):
    login, _ = token_registry
    done = build(f"{login.registry.address}/other/hello:1", login.base,
                 api_url=prefect_server, work=tmp_path / "work", key_dir=signing_key,
                 platforms=("linux/amd64",))
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    # the actions in the order the registry's challenge gives them
    assert re.search(r"not granted (pull,push|push,pull) on repository other/hello", last), \
        done.stderr[-2000:]
    assert re.search(r"scope repository:other/hello:(pull,push|push,pull)\)", last)
    assert "--insecure-registry" not in last  # a refusal, not an unreachable registry
    assert login.password not in done.stdout + done.stderr
    assert "STEP 1/" not in done.stderr  # refused before any build step


def test_an_untrusted_ca_is_named_with_where_to_put_it(authority, tmp_path):
    stranger = Authority(tmp_path / "other-ca")
    (tmp_path / "reg").mkdir()
    with tls_registry(tmp_path / "reg", stranger, auth="") as registry, \
            pytest.raises(ConfigurationError) as caught:
        check_push_access(f"{registry.address}/team/app:1", insecure=False)
    message = str(caught.value)
    assert "is not trusted" in message
    assert f"/etc/containers/certs.d/{registry.address}/ca.crt" in message


def test_mutual_tls_with_a_client_certificate_in_certs_d(authority, tmp_path):
    """`client.cert` + `client.key` beside ca.crt: skopeo and our client present them."""
    clients = Authority(tmp_path / "client-ca")
    (tmp_path / "reg").mkdir()
    with tls_registry(tmp_path / "reg", authority, auth="",
                      client_ca=clients.cert_path) as registry, \
            trusted_in_certs_d(registry.address, registry.ca) as directory:
        # TLS 1.3: the refusal comes on the first read, after the handshake; never transient
        with pytest.raises(ConfigurationError, match=r"refused our TLS client certificate.*"
                           r"client\.cert and client\.key"):
            check_push_access(f"{registry.address}/team/app:1", insecure=False)
        pair = clients.issue("client", common_name="builder", client=True)
        (directory / "client.cert").write_bytes(pair.cert.read_bytes())
        (directory / "client.key").write_bytes(pair.key.read_bytes())
        check_push_access(f"{registry.address}/team/app:1", insecure=False)
        listed = subprocess.run(["skopeo", "list-tags", f"docker://{registry.address}/team/x"],
                                capture_output=True, text=True, env=user_env(), check=False)
        assert "certificate" not in listed.stderr.lower(), listed.stderr
