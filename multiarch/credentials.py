"""Git credentials travel by reference, never as values.

A token in a git URL would otherwise reach everything the URL reaches: image labels, index
annotations, buildah's log, error messages, `ps` (git's argv), Prefect's stored parameters
and logs, Job specs. So a URL is split once into a clean URL (what everything else sees)
and a credential line (`https://user:token@host`), and credentials come from places that
hold them by name:

1. env `MULTIARCH_GIT_CREDENTIALS` (one line per host; the CLI moves a URL's userinfo here),
2. the git-credential-store file named by env `MULTIARCH_GIT_CREDENTIALS_FILE`,
3. a Prefect Secret block named by `runner.git_credentials_block` (its value: the lines).

git gets them from a credential-store file (mode 0600, in a private directory or the run's
scratch) through `-c credential.helper=store --file=PATH`: the path is on argv, the secret
is not. The store helper matches protocol and host, so a line is never sent elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import tempfile
from collections.abc import Iterable, Iterator, MutableMapping
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from multiarch.errors import ConfigurationError

ENV_CREDENTIALS = "MULTIARCH_GIT_CREDENTIALS"
ENV_CREDENTIALS_FILE = "MULTIARCH_GIT_CREDENTIALS_FILE"
STORE_NAME = "git-credentials"
# Schemes whose userinfo is an HTTP credential (a token may even sit in the user part);
# for others (ssh://git@host) a user name alone is not secret and stays.
HTTP_SCHEMES = ("http", "https")
_USERINFO_RE = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/@'\"<>]+)@", re.ASCII
)
# RAM-backed when there is one: a store written for a single git call never hits disk.
_PRIVATE_TMP = "/dev/shm"  # noqa: S108 - only a parent for mkdtemp's private 0700 directory


def split_credentials(url: str) -> tuple[str, str | None]:
    """(the URL without its secret, the credential line or None).

    `https://user:tok@host:8443/r.git` -> (`https://host:8443/r.git`,
    `https://user:tok@host:8443`). A URL without a secret comes back unchanged.
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc or not parts.scheme:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    if parts.scheme.lower() not in HTTP_SCHEMES:
        user, sep, _password = userinfo.partition(":")
        if not sep:
            return url, None  # ssh://git@host: a user name, not a secret
        return urlunsplit(parts._replace(netloc=f"{user}@{hostport}")), None
    if ":" not in userinfo:
        userinfo += ":"  # a token as the user name (GitHub accepts this), empty password
    clean = urlunsplit(parts._replace(netloc=hostport))
    return clean, f"{parts.scheme}://{userinfo}@{hostport}"


def clean_url(url: str) -> str:
    return split_credentials(url)[0]


def has_credentials(url: str) -> bool:
    return clean_url(url) != url


def secrets_of(lines: Iterable[str]) -> list[str]:
    """The secret parts of credential lines (as written and percent-decoded), for scrubbing
    text that might echo them without their URL (a tool's own message)."""
    found: list[str] = []
    for line in lines:
        userinfo = urlsplit(line).netloc.rpartition("@")[0]
        user, _, password = userinfo.partition(":")
        value = password or user  # a token may be the user name
        if len(value) >= 4:  # shorter values would blank out ordinary words
            found += [value, unquote(value)]
    return sorted(set(found), key=len, reverse=True)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with the userinfo of every URL in it removed, and any known secret masked."""

    def strip(match: re.Match[str]) -> str:
        scheme = match["scheme"]
        if scheme.lower().rstrip(":/") in HTTP_SCHEMES:
            return scheme
        user, sep, _ = match["userinfo"].partition(":")
        return f"{scheme}{user}@" if sep else match[0]

    text = _USERINFO_RE.sub(strip, text)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def move_to_environment(url: str, environ: MutableMapping[str, str] | None = None) -> str:
    """Strip a URL's credential into env MULTIARCH_GIT_CREDENTIALS; return the clean URL.

    This is how a URL that carries credentials keeps working: the run reads them from its
    own environment, and only the clean URL becomes a parameter, label or log line.
    """
    environ = os.environ if environ is None else environ
    clean, line = split_credentials(url)
    if line is not None:
        present = environ.get(ENV_CREDENTIALS, "").splitlines()
        if line not in present:
            environ[ENV_CREDENTIALS] = "\n".join([line, *present])  # the URL's own wins
    return clean


def parse_lines(text: str, *, origin: str) -> list[str]:
    """Credential lines from git-credential-store text; a malformed line is refused by its
    number, never echoed (it may be a secret)."""
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = urlsplit(line)
        if not parts.scheme or "@" not in parts.netloc or not parts.hostname:
            raise ConfigurationError(
                f"{origin}: line {number} is not a credential line: write "
                "https://USER:TOKEN@HOST (git-credential-store format)"
            )
        lines.append(line)
    return lines


def credential_lines(block: str | None = None,
                     environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Every credential line of this run, in precedence order: environment, file, block.

    git's store helper takes the first line matching the host, so order is precedence.
    """
    environ = os.environ if environ is None else environ
    lines = parse_lines(environ.get(ENV_CREDENTIALS, ""), origin=f"env {ENV_CREDENTIALS}")
    path = environ.get(ENV_CREDENTIALS_FILE)
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigurationError(
                f"env {ENV_CREDENTIALS_FILE}: cannot read {path}: {exc.strerror}"
            ) from exc
        lines += parse_lines(text, origin=f"credentials file {path}")
    if block:
        lines += parse_lines(
            secret_block_value(block, field="git_credentials_block",
                               holds="https://USER:TOKEN@HOST lines"),
            origin=f"Secret block {block!r}")
    return lines


def secret_block_value(name: str, *, field: str, holds: str) -> str:
    """The text of a Prefect Secret block (created in the UI or `Secret(value=...).save`);
    errors name the request `field` that named it and what the block must `holds`."""
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(name, _sync=True).get()
    except ValueError as exc:
        raise ConfigurationError(
            f"{field}: no Secret block named {name!r}: create one holding {holds}"
        ) from exc
    if not isinstance(value, str):
        raise ConfigurationError(
            f"{field}: Secret block {name!r} must hold text ({holds}), not JSON"
        )
    return value


def write_store(path: Path, lines: Iterable[str]) -> Path:
    """Write a git-credential-store file readable by its owner only, created that way (no
    moment where it is world-readable)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("".join(f"{line}\n" for line in lines))
    return path


def helper_config(store: str | None) -> tuple[str, ...]:
    """git `-c` options that make the store file the only credential helper.

    The empty value first drops helpers from the machine's git config, so that a failed
    login's `erase` never touches them and the result does not depend on the worker.
    The helper string goes through a shell in git, hence the quoting.
    """
    if store is None:
        return ()
    helper = f"store --file={shlex.quote(store)}"
    return ("-c", "credential.helper=", "-c", f"credential.helper={helper}")


@contextlib.contextmanager
def temporary_store(lines: list[str]) -> Iterator[str | None]:
    """A store file for one git call, in a private directory removed afterwards; None
    (no helper) when there are no credentials."""
    if not lines:
        yield None
        return
    parent = _PRIVATE_TMP if os.access(_PRIVATE_TMP, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="multiarch-git-", dir=parent) as directory:
        yield str(write_store(Path(directory) / STORE_NAME, lines))
