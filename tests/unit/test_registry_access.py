"""Where trust and credentials come from: the places and order containers/image uses.

Credential helpers are small scripts on PATH speaking Docker's helper protocol (our
boundary); the real registries, TLS and `skopeo login` are in tests/integration.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from multiarch.errors import ConfigurationError
from multiarch.registry_access import (
    AuthFile,
    auth_files,
    cert_dir,
    credentials_for,
    is_loopback,
    ssl_context,
)


def auth(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_without_xdg_runtime_dir_the_primary_file_is_run_containers_uid():
    """Where `skopeo login` as root writes when XDG_RUNTIME_DIR is unset."""
    assert [f.path for f in auth_files({"HOME": "/home/u"})] == [
        Path(f"/run/containers/{os.getuid()}/auth.json"),
        Path("/home/u/.config/containers/auth.json"),
        Path("/home/u/.docker/config.json"),
        Path("/home/u/.dockercfg"),
    ]


def test_xdg_dirs_and_docker_config_move_their_files():
    env = {"HOME": "/home/u", "XDG_RUNTIME_DIR": "/run/user/7", "XDG_CONFIG_HOME": "/cfg",
           "DOCKER_CONFIG": "/dk"}
    assert [f.path for f in auth_files(env)] == [
        Path("/run/user/7/containers/auth.json"), Path("/cfg/containers/auth.json"),
        Path("/dk/config.json"), Path("/home/u/.dockercfg")]


def test_registry_auth_file_is_the_only_file_read():
    env = {"HOME": "/home/u", "REGISTRY_AUTH_FILE": "/etc/a.json", "XDG_RUNTIME_DIR": "/r"}
    assert auth_files(env) == [AuthFile(path=Path("/etc/a.json"))]


def test_the_most_specific_namespace_key_wins(tmp_path):
    path = write(tmp_path / "auth.json", {"auths": {
        "reg.example": auth("host", "h"), "reg.example/team": auth("team", "t"),
        "reg.example/team/app": auth("app", "a")}})
    assert credentials_for("reg.example", [path], repository="team/app") == ("app", "a")
    assert credentials_for("reg.example", [path], repository="team/web") == ("team", "t")
    assert credentials_for("reg.example", [path], repository="other/x") == ("host", "h")


def test_a_later_file_is_read_when_an_earlier_one_lacks_the_registry(tmp_path):
    first = write(tmp_path / "a.json", {"auths": {"other.example": auth("o", "o")}})
    second = write(tmp_path / "b.json", {"auths": {"https://reg.example/v1/": auth("u", "p")}})
    assert credentials_for("reg.example", [tmp_path / "none.json", first, second]) == ("u", "p")


def test_legacy_dockercfg_has_no_auths_wrapper(tmp_path):
    path = write(tmp_path / ".dockercfg", {"reg.example": auth("old", "style")})
    assert credentials_for("reg.example", [path]) == ("old", "style")


def test_docker_hub_matches_its_v1_key(tmp_path):
    path = write(tmp_path / "config.json", {"auths": {"https://index.docker.io/v1/":
                                                      auth("hub", "pw")}})
    assert credentials_for("docker.io", [path], repository="library/x") == ("hub", "pw")


@pytest.fixture
def helpers(tmp_path, monkeypatch) -> Path:
    """Two credential helpers on PATH: `good` knows reg.example, `none` knows nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    good = bin_dir / "docker-credential-good"
    good.write_text('#!/bin/sh\nread server\n[ "$server" = reg.example ] || exit 1\n'
                    'echo \'{"ServerURL":"reg.example","Username":"robot","Secret":"t0k"}\'\n')
    none = bin_dir / "docker-credential-none"
    none.write_text("#!/bin/sh\necho 'credentials not found in native keychain'\nexit 1\n")
    for script in (good, none):
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def test_cred_helpers_win_over_auths_in_the_same_file(tmp_path, helpers):
    path = write(tmp_path / "config.json", {"auths": {"reg.example": auth("file", "f")},
                                            "credHelpers": {"reg.example": "good"}})
    assert credentials_for("reg.example", [path]) == ("robot", "t0k")


def test_creds_store_credentials_are_refused_with_the_cred_helpers_line(tmp_path, helpers):
    """skopeo 1.9 and buildah ignore credsStore: using it here would make us disagree."""
    path = write(tmp_path / "config.json", {"credsStore": "good"})
    with pytest.raises(ConfigurationError) as caught:
        credentials_for("reg.example", [path])
    assert '"credHelpers": {"reg.example": "good"}' in str(caught.value)
    later = write(tmp_path / "later.json", {"auths": {"other.example": auth("l", "l")}})
    store_without = write(tmp_path / "none.json", {"credsStore": "none"})
    assert credentials_for("other.example", [store_without, later]) == ("l", "l")


def test_a_missing_helper_program_is_named(tmp_path, helpers):
    path = write(tmp_path / "config.json", {"credHelpers": {"reg.example": "ecr-login"}})
    with pytest.raises(ConfigurationError, match="docker-credential-ecr-login is not on PATH"):
        credentials_for("reg.example", [path])


def test_a_cred_helper_without_credentials_is_a_clear_error(tmp_path, helpers):
    path = write(tmp_path / "config.json", {"credHelpers": {"reg.example": "none"}})
    with pytest.raises(ConfigurationError, match=r"has no credentials for reg\.example"):
        credentials_for("reg.example", [path])


def _ca_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "multiarch-test-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def _subjects(context: ssl.SSLContext) -> list[str]:
    return [dict(x[0] for x in ca["subject"]).get("commonName", "")
            for ca in context.get_ca_certs()]


def test_the_users_certs_d_comes_before_the_systems(tmp_path):
    user = tmp_path / ".config" / "containers" / "certs.d" / "reg.example:5000"
    user.mkdir(parents=True)
    assert cert_dir("reg.example:5000", {"HOME": str(tmp_path)}) == user
    assert cert_dir("absent.example:1", {"HOME": str(tmp_path)}) is None


def test_a_ca_in_certs_d_is_trusted_beside_the_system_store(tmp_path):
    directory = tmp_path / ".config" / "containers" / "certs.d" / "reg.example:5000"
    directory.mkdir(parents=True)
    (directory / "ca.crt").write_bytes(_ca_pem())
    env = {"HOME": str(tmp_path)}
    plain = ssl_context("other.example", env)
    with_ca = ssl_context("reg.example:5000", env)
    assert "multiarch-test-ca" in _subjects(with_ca)
    assert "multiarch-test-ca" not in _subjects(plain)
    assert with_ca.verify_mode == ssl.CERT_REQUIRED


def test_ssl_cert_file_is_trusted(tmp_path):
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(_ca_pem())
    context = ssl_context("reg.example", {"HOME": str(tmp_path), "SSL_CERT_FILE": str(bundle)})
    assert "multiarch-test-ca" in _subjects(context)


def test_a_client_certificate_without_its_key_is_named(tmp_path):
    directory = tmp_path / ".config" / "containers" / "certs.d" / "reg.example"
    directory.mkdir(parents=True)
    (directory / "client.cert").write_bytes(_ca_pem())
    with pytest.raises(ConfigurationError, match=r"client\.cert: a client certificate without"):
        ssl_context("reg.example", {"HOME": str(tmp_path)})


def test_a_broken_ca_file_is_named(tmp_path):
    directory = tmp_path / ".config" / "containers" / "certs.d" / "reg.example"
    directory.mkdir(parents=True)
    (directory / "ca.crt").write_text("not a certificate")
    with pytest.raises(ConfigurationError, match=r"certificates for reg.example in .* cannot"):
        ssl_context("reg.example", {"HOME": str(tmp_path)})


@pytest.mark.parametrize(("registry", "loopback"), [
    ("127.0.0.1:5000", True), ("localhost:5000", True), ("[::1]:5000", True),
    ("localhost", True), ("reg.example:5000", False), ("10.0.0.1:5000", False)])
def test_loopback_registries(registry, loopback):
    assert is_loopback(registry) is loopback
