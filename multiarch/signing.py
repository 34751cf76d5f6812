"""Signatures: containers "simple signing" signatures, made and checked by skopeo with GPG.

Why GPG and not sigstore keys: Debian 12's skopeo 1.9.3 is built with sigstore removed
(`--sign-by-sigstore-private-key` and a `sigstoreSigned` policy both end in "Debian-local
change: sigstore disabled"), and no other signer is packaged here. GPG simple signing is
what this skopeo does: `skopeo standalone-sign` signs a manifest's exact bytes together
with the image's identity (a docker reference), `skopeo standalone-verify` checks one.

Why the registry holds them: simple signatures normally live on a "lookaside" web server
next to the registry; a pod cannot write there and a user would have a second service to
run. So each signature is attached to the manifest it signs as an OCI referrer
(multiarch.referrers), found back through the referrers API or its tag fallback, and
`write_lookaside` lays them out for a containers policy (skopeo, podman) when wanted.

Keys never touch argv, logs or the environment of other steps: the armored secret key is
read from a file or a Prefect Secret block into a private temporary GnuPG home (0700),
imported through stdin, and that home and its gpg-agent are gone when signing ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from multiarch.credentials import secret_block_value
from multiarch.errors import ConfigurationError, PublishError
from multiarch.process import Captured, capture
from multiarch.registry import skopeo_error_line

SIGNATURE_ARTIFACT_TYPE = "application/vnd.multiarch.container-signature.v1+pgp"
SIGNATURE_MEDIA_TYPE = "application/pgp-signature"
IDENTITY_ANNOTATION = "dev.multiarch.signature.identity"
FINGERPRINT_ANNOTATION = "dev.multiarch.signature.fingerprint"
GPG_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class SigningKey:
    """An armored GPG secret key and where it came from (the only part ever shown)."""

    armored: bytes = field(repr=False)
    origin: str


def load_signing_key(*, key_file: str | None = None, key_block: str | None = None,
                     field_name: str = "supply_chain") -> SigningKey | None:
    """The key named by a file path or a Prefect Secret block; None when neither is set."""
    if key_file and key_block:
        raise ConfigurationError(f"{field_name}: both sign_key_file and sign_key_block are "
                                 "set: give one")
    if key_file:
        try:
            armored = Path(key_file).read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"{field_name}.sign_key_file: cannot read {key_file}: "
                                     f"{exc.strerror}") from exc
        return checked_key(armored, origin=f"file {key_file}", field_name=field_name)
    if key_block:
        text = secret_block_value(
            key_block, field=f"{field_name}.sign_key_block",
            holds="the armored key of `gpg --armor --export-secret-keys`")
        return checked_key(text.encode(), origin=f"Secret block {key_block!r}",
                           field_name=field_name)
    return None


def checked_key(armored: bytes, *, origin: str, field_name: str) -> SigningKey:
    if b"-----BEGIN PGP PRIVATE KEY BLOCK-----" not in armored:
        raise ConfigurationError(
            f"{field_name}: {origin} is not an armored GPG secret key: export one with "
            "`gpg --armor --export-secret-keys FINGERPRINT` (or `multiarch keygen`)")
    return SigningKey(armored=armored, origin=origin)


@dataclass(frozen=True)
class Keyring:
    """A private GnuPG home holding one key; sign and verify go through skopeo."""

    home: Path
    fingerprint: str

    def env(self) -> dict[str, str]:
        return {"GNUPGHOME": str(self.home)}

    def sign(self, manifest: bytes, identity: str) -> bytes:
        """skopeo's simple signature of these manifest bytes for `identity`."""
        manifest_file, signature_file = self.home / "manifest.json", self.home / "signature"
        manifest_file.write_bytes(manifest)
        signature_file.unlink(missing_ok=True)
        done = capture(["skopeo", "standalone-sign", str(manifest_file), identity,
                        self.fingerprint, "--output", str(signature_file)],
                       what=f"signing {identity}", timeout_s=GPG_TIMEOUT_S, env=self.env())
        if not done.ok:
            raise PublishError(f"signing {identity} failed: {skopeo_said(done)}")
        return signature_file.read_bytes()

    def public_key(self) -> bytes:
        """The key's armored public half (what `multiarch verify --key` takes)."""
        done = capture(["gpg", "--batch", "--armor", "--export", self.fingerprint],
                       what="exporting the public key", timeout_s=GPG_TIMEOUT_S, env=self.env())
        if not done.ok or not done.output:
            raise ConfigurationError(f"exporting the public key failed: {done.last_error()}")
        return done.output

    def verify(self, manifest: bytes, identity: str, signature: bytes) -> str | None:
        """None when `signature` is this key's over these bytes for `identity`; else why not."""
        manifest_file, signature_file = self.home / "manifest.json", self.home / "signature"
        manifest_file.write_bytes(manifest)
        signature_file.write_bytes(signature)
        done = capture(["skopeo", "standalone-verify", str(manifest_file), identity,
                        self.fingerprint, str(signature_file)],
                       what=f"verifying {identity}", timeout_s=GPG_TIMEOUT_S, env=self.env())
        return None if done.ok else skopeo_said(done)


def skopeo_said(done: Captured) -> str:
    return skopeo_error_line((done.stderr or done.stdout).splitlines())


@contextlib.contextmanager
def gnupg_home() -> Iterator[Path]:
    """A private temporary GnuPG home (0700); on exit its gpg-agent is stopped and the home
    removed, so nothing of a key outlives the block."""
    home = Path(tempfile.mkdtemp(prefix="multiarch-gpg-"))
    os.chmod(home, 0o700)
    try:
        yield home
    finally:
        with contextlib.suppress(ConfigurationError, OSError):
            capture(["gpgconf", "--homedir", str(home), "--kill", "all"],
                    what="stopping gpg-agent", timeout_s=GPG_TIMEOUT_S)
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def keyring(armored: bytes, *, what: str) -> Iterator[Keyring]:
    """Import one key (secret or public) into a temporary GnuPG home (`gnupg_home`)."""
    with gnupg_home() as home:
        done = capture(["gpg", "--batch", "--quiet", "--import"], what=f"importing {what}",
                       timeout_s=GPG_TIMEOUT_S, env={"GNUPGHOME": str(home)}, stdin=armored)
        if not done.ok:
            raise ConfigurationError(f"{what}: gpg cannot import it: {done.last_error()}")
        yield Keyring(home=home, fingerprint=single_fingerprint(home, what=what))


def single_fingerprint(home: Path, *, what: str) -> str:
    listed = capture(["gpg", "--batch", "--with-colons", "--list-keys"],
                     what=f"reading {what}", timeout_s=GPG_TIMEOUT_S,
                     env={"GNUPGHOME": str(home)})
    primary = []
    previous = ""
    for line in listed.stdout.splitlines():
        fields = line.split(":")
        if fields[0] == "fpr" and previous == "pub":
            primary.append(fields[9])
        previous = fields[0] if fields[0] in ("pub", "sub") else previous
        if fields[0] == "fpr":
            previous = ""
    if len(primary) != 1:
        raise ConfigurationError(f"{what}: holds {len(primary)} keys: give exactly one")
    return primary[0]


def check_signing_key(*, key_file: str | None = None, key_block: str | None = None
                      ) -> str | None:
    """Before any build: the key is readable, is one GPG key, and signs (no passphrase);
    a note for the log, or None when no key is named."""
    key = load_signing_key(key_file=key_file, key_block=key_block)
    if key is None:
        return None
    field_name = "supply_chain.sign_key_file" if key_file else "supply_chain.sign_key_block"
    with keyring(key.armored, what=f"{field_name}: the key from {key.origin}") as ring:
        try:
            ring.sign(b"{}", "multiarch.invalid/preflight:check")
        except PublishError as exc:
            raise ConfigurationError(
                f"{field_name}: the key from {key.origin} cannot sign ({exc}): give a key "
                "without passphrase, protected by where it is stored") from exc
        return f"signing with GPG key {ring.fingerprint} from {key.origin}"


def generate_key(directory: Path, *, name: str = "multiarch signing key") -> tuple[Path, Path]:
    """A new ed25519 signing key without passphrase: `<dir>/signing.key` (0600, armored
    secret) and `<dir>/signing.pub`. For demos and tests; production keys come from the
    team's own key management."""
    directory.mkdir(parents=True, exist_ok=True)
    secret, public = directory / "signing.key", directory / "signing.pub"
    with gnupg_home() as home:
        done = capture(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
                        "--quick-gen-key", f"{name} <signing@multiarch.invalid>", "ed25519",
                        "sign", "never"], what="generating a key", timeout_s=GPG_TIMEOUT_S,
                       env={"GNUPGHOME": str(home)})
        if not done.ok:
            raise ConfigurationError(f"generating a key failed: {done.last_error()}")
        ring = Keyring(home=home, fingerprint=single_fingerprint(home, what="the new key"))
        exported = capture(["gpg", "--batch", "--armor", "--export-secret-keys"],
                           what="exporting the key", timeout_s=GPG_TIMEOUT_S, env=ring.env())
        secret.unlink(missing_ok=True)
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(exported.output)
        public.write_bytes(ring.public_key())
    return secret, public
