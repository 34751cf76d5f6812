"""Build secrets, SSH agents and extra build contexts: what a RUN step may use that never
becomes part of the image, its history, a parameter or a log line.

A build arg's value is recorded in the image's history (`|1 TOKEN=... /bin/sh -c ...`) and
in Prefect's stored flow-run parameters. A build secret is not: buildah mounts it as a
file at `/run/secrets/ID` for the one RUN step that asks for it
(`RUN --mount=type=secret,id=ID`), and nothing of it is committed. The request names only
where a secret comes from, never its value:

- `--secret id=ID,src=FILE`: a file on the machine that builds (buildah reads it);
- `--secret id=ID,env=VAR`: an environment variable of the build process (buildah 1.28
  reads `env=` itself, measured: no copy of the value is written by us);
- `--secret id=ID,block=BLOCK`: a Prefect Secret block; the local runner writes its value
  to a 0600 file in the platform's scratch directory, passes it as `src=`, and deletes it
  as soon as the build step ends (the scratch goes too, and a killed run's sweep);
- Kubernetes: `runner.kubernetes.build_secrets` maps each ID to a Secret (`SECRET[/KEY]`),
  projected as a file into the build container only.

`--ssh default|ID[=SOCKET|KEY[,KEY]]` and `--build-context NAME=DIR|docker-image://REF|...`
go to buildah as written (buildah 1.28 has both, measured). buildah itself mounts an
absent secret or SSH id silently (the RUN step sees no file, measured), so preflight reads
the Containerfile and refuses a mount whose id this build does not give, unless the mount
says `required=false`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from multiarch.containerfile import numbered_instructions
from multiarch.errors import ConfigurationError, StepFailure
from multiarch.textvalue import TextValue

if TYPE_CHECKING:
    from multiarch.request import BuildRequest
    from multiarch.source import PinnedSource

# An id is also a file name (/run/secrets/ID, a projected Secret's path) and a Secret key.
SECRET_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CONTEXT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SecretKind = Literal["src", "env", "block"]
SECRET_KINDS: tuple[SecretKind, ...] = ("src", "env", "block")
SECRET_FORMS = ("id=ID,src=FILE, id=ID,env=VAR or id=ID,block=BLOCK "  # noqa: S105 - syntax
                "(a Prefect Secret block)")
SECRET_FIX = "pass --secret id=ID,src=FILE|env=VAR|block=BLOCK"  # noqa: S105 - a hint
KUBE_SECRET_FLAG = "--kube-secret"  # noqa: S105 - a flag's name
SSH_FORMS = "default, ID, or ID=SOCKET|KEY[,KEY]"
# What buildah reads a build context as: a URL-like value (docker-image://, container-image://,
# oci-layout://, http(s)://) as it says, anything else as a directory.
URL_CONTEXT_RE = re.compile(r"^[a-z][a-z0-9+.-]*://")
MASK = "***"
MASK_MIN_LEN = 4  # shorter lines of a secret would blank out ordinary words
MASK_READ_LIMIT = 1 << 20


def _fields(text: str, *, what: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise ValueError(f"{text!r}: {part!r} is not KEY=VALUE: write {what}")
        if key in fields:
            raise ValueError(f"{text!r}: {key}= is given twice: write {what}")
        fields[key] = value
    return fields


class BuildSecret(TextValue):
    """One build secret: its id and where its value comes from, never the value itself.

    Written `id=ID,src=FILE`, `id=ID,env=VAR` or `id=ID,block=BLOCK` (BuildKit's and
    buildah's syntax, plus `block=`; `source=` is taken for `src=`, and `type=file|env`
    is accepted when it agrees)."""

    id: str
    kind: SecretKind
    source: str

    @classmethod
    def fields_from_text(cls, text: str) -> dict[str, Any]:
        fields = _fields(text, what=SECRET_FORMS)
        if "source" in fields:
            if "src" in fields:
                raise ValueError(f"{text!r}: give src= or source=, not both")
            fields["src"] = fields.pop("source")
        declared = fields.pop("type", None)
        secret_id = fields.pop("id", None)
        if secret_id is None:
            raise ValueError(f"{text!r} has no id=: write {SECRET_FORMS}")
        given = [kind for kind in SECRET_KINDS if kind in fields]
        unknown = sorted(set(fields) - set(SECRET_KINDS))
        if unknown:
            raise ValueError(f"{text!r}: unknown {', '.join(k + '=' for k in unknown)}: write "
                             f"{SECRET_FORMS}")
        if len(given) != 1:
            named = "no source" if not given else f"{len(given)} sources"
            raise ValueError(f"{text!r} names {named}: write exactly one of {SECRET_FORMS}")
        kind = given[0]
        if declared is not None and (declared, kind) not in (("file", "src"), ("env", "env")):
            raise ValueError(f"{text!r}: type={declared} does not go with {kind}=: drop type=")
        return {"id": secret_id, "kind": kind, "source": fields[kind]}

    def check(self) -> None:
        if not SECRET_ID_RE.match(self.id):
            raise ValueError(f"secret id {self.id!r} is invalid: up to 63 letters, digits, "
                             "_ . - starting with a letter or digit (it names /run/secrets/ID)")
        if not self.source.strip():
            raise ValueError(f"{self}: {self.kind}= is empty: write {SECRET_FORMS}")
        if self.kind == "env" and not ENV_NAME_RE.match(self.source):
            raise ValueError(f"{self}: {self.source!r} is not an environment variable name "
                             "(env= names the variable holding the secret, not the value)")

    def __str__(self) -> str:
        return f"id={self.id},{self.kind}={self.source}"

    def describe(self) -> str:
        return {"src": f"file {self.source}", "env": f"env {self.source}",
                "block": f"Secret block {self.source!r}"}[self.kind]


class SshSource(TextValue):
    """`--ssh` as buildah takes it: `default` or `ID` (the agent of $SSH_AUTH_SOCK), or
    `ID=SOCKET|KEY[,KEY]` (an agent socket, or private key files buildah loads into an
    agent of its own). Paths only, never key material."""

    id: str
    paths: tuple[str, ...] = ()

    @classmethod
    def fields_from_text(cls, text: str) -> dict[str, Any]:
        ssh_id, sep, rest = text.partition("=")
        paths = tuple(rest.split(",")) if sep else ()
        if sep and not all(p.strip() for p in paths):
            raise ValueError(f"{text!r}: an empty path: write {SSH_FORMS}")
        return {"id": ssh_id, "paths": paths}

    def check(self) -> None:
        if not SECRET_ID_RE.match(self.id):
            raise ValueError(f"ssh id {self.id!r} is invalid: write {SSH_FORMS} (the id "
                             "RUN --mount=type=ssh,id=ID names; `default` when it names none)")

    def __str__(self) -> str:
        return f"{self.id}={','.join(self.paths)}" if self.paths else self.id


# --- names that look like secrets --------------------------------------------------------

# Anywhere in a name: GITHUB_TOKEN, DBPASSWORD, AWS_SECRET_ACCESS_KEY, APIKEY.
SECRET_WORDS = ("TOKEN", "PASSWORD", "PASSWD", "SECRET", "CREDENTIAL", "APIKEY")
# Only as a whole part of a name: API_KEY and apiKey, but not KEYBOARD or MONKEY; NPM_AUTH
# but not AUTHOR.
SECRET_PARTS = frozenset({"KEY", "KEYS", "AUTH", "OAUTH", "PASS", "PWD", "PAT", "CRED",
                          "CREDS"})
_PART_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


def looks_secret(name: str) -> bool:
    """Does a build arg's name say it holds a secret?"""
    upper = name.upper()
    if any(word in upper for word in SECRET_WORDS):
        return True
    return any(part.upper() in SECRET_PARTS for part in _PART_SPLIT.split(name) if part)


def build_arg_warnings(build_args: Iterable[str]) -> list[str]:
    """One warning line naming every build arg that looks like a secret, and the fix."""
    names = sorted(name for name in build_args if looks_secret(name))
    if not names:
        return []
    first = names[0]
    verb = "looks like a secret" if len(names) == 1 else "look like secrets"
    return [f"build_args: WARNING: {', '.join(names)} {verb}, and a build arg's value is kept "
            "in the image's history (buildah records it with every RUN step) and in Prefect's "
            f"stored flow-run parameters: pass it as a build secret instead (--secret "
            f"id={first},env={first}, read by RUN --mount=type=secret,id={first} from "
            f"/run/secrets/{first})"]


# --- the request's cross-field rules (BuildRequest's validator calls this) ---------------

def check_request(request: BuildRequest) -> None:
    """ValueError starting with the field at fault; nothing here touches the machine."""
    kube = request.runner.kind == "kubernetes"
    ids = [secret.id for secret in request.secrets]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ValueError(f"secrets: id {twice[0]!r} is given twice: give each id once")
    if kube and request.secrets:
        raise ValueError(
            "secrets: the kubernetes runner builds in pods that cannot read this machine's "
            "files, environment or Secret blocks: name a Kubernetes Secret per id in "
            f"runner.kubernetes.build_secrets ({KUBE_SECRET_FLAG} ID=SECRET[/KEY])")
    if not kube and request.runner.kubernetes.build_secrets:
        raise ValueError(
            "runner.kubernetes.build_secrets: set, but the runner is "
            f"{request.runner.kind}: give secrets instead ({SECRET_FIX})")
    ssh_ids = [source.id for source in request.ssh]
    twice = sorted({i for i in ssh_ids if ssh_ids.count(i) > 1})
    if twice:
        raise ValueError(f"ssh: id {twice[0]!r} is given twice: give each id once")
    if kube and request.ssh:
        raise ValueError(
            "ssh: the kubernetes runner's build pods cannot reach this machine's SSH agent "
            "or keys: fetch over https with a token in a build secret "
            f"(runner.kubernetes.build_secrets, {KUBE_SECRET_FLAG} ID=SECRET[/KEY]) instead")
    for name, value in request.build_contexts.items():
        if not CONTEXT_NAME_RE.match(name):
            raise ValueError(f"build_contexts: name {name!r} is invalid: letters, digits, "
                             "_ . - (the name COPY --from=NAME or FROM NAME uses)")
        if not value.strip():
            raise ValueError(f"build_contexts: {name}= is empty: give a directory, "
                             "docker-image://REF, container-image://REF or an https:// URL")
        if kube and not URL_CONTEXT_RE.match(value):
            raise ValueError(
                f"build_contexts: {name}={value} is a directory of this machine, which build "
                "pods cannot see: give docker-image://REF or an https:// URL on kubernetes")
    if request.build_contexts and request.rebuild == "if-changed":
        raise ValueError(
            "build_contexts: rebuild if-changed cannot tell whether an extra build context "
            "changed (its files and images are not in the fingerprint): use rebuild always")


# --- preflight: sources readable, every mount given ---------------------------------------

def check_build_secrets(request: BuildRequest, source: PinnedSource | None = None
                        ) -> list[str]:
    """Before any build: every secret, SSH and build-context source of the local runner
    exists and is readable here, and every secret or SSH mount of the Containerfile has a
    source (for a git context once `source` is pinned). Notes and warnings for the log;
    ConfigurationError naming the field and the fix."""
    notes = build_arg_warnings(request.build_args)
    if request.runner.kind == "local":
        notes += _check_local_sources(request)
    return notes + check_secret_mounts(request, source)


def check_secret_mounts(request: BuildRequest, source: PinnedSource | None) -> list[str]:
    """Every secret or ssh mount of the Containerfile has a source; for a git context only
    once `source` is pinned (the flow calls this again then)."""
    text = _containerfile(request, source)
    if text is None:
        return ["secrets: the Containerfile's secret and ssh mounts are checked once the git "
                "source is pinned"]
    return check_mounts(text, secrets=given_secret_ids(request),
                        ssh=[s.id for s in request.ssh],
                        path=request.containerfile or "Containerfile")


def given_secret_ids(request: BuildRequest) -> list[str]:
    """The secret ids this build gives buildah, whatever the runner."""
    if request.runner.kind == "kubernetes":
        return list(request.runner.kubernetes.build_secrets)
    return [secret.id for secret in request.secrets]


def _containerfile(request: BuildRequest, source: PinnedSource | None) -> str | None:
    from multiarch.rebuild import read_containerfile  # rebuild imports the request
    from multiarch.source import PinnedSource

    if source is None:
        if request.is_git:
            return None
        source = PinnedSource(kind="local", location=str(Path(request.context).resolve()))
    return read_containerfile(request, source)


def _check_local_sources(request: BuildRequest) -> list[str]:
    notes = []
    for number, secret in enumerate(request.secrets):
        where = f"secrets.{number}: {secret}"
        if secret.kind == "src":
            _check_readable_file(secret.source, where=where,
                                 fix="give a file this user can read, or use env=VAR or "
                                     "block=BLOCK")
        elif secret.kind == "env" and not os.environ.get(secret.source):
            raise ConfigurationError(
                f"{where}: the environment variable {secret.source} is not set (or empty) in "
                "the process that builds, so buildah would mount nothing: export it first, "
                "or use src=FILE or block=BLOCK")
        notes.append(f"secrets: {secret.id} from {secret.describe()}")
    for number, ssh in enumerate(request.ssh):
        where = f"ssh.{number}: {ssh}"
        if not ssh.paths:
            socket = os.environ.get("SSH_AUTH_SOCK")
            if not socket:
                raise ConfigurationError(
                    f"{where}: SSH_AUTH_SOCK is not set, so there is no agent to forward: "
                    "start one (eval $(ssh-agent) && ssh-add KEY) or name a key file: "
                    f"--ssh {ssh.id}=~/.ssh/id_ed25519")
            _check_socket(socket, where=f"{where}: SSH_AUTH_SOCK")
        for path in ssh.paths:
            if _is_socket(path):
                continue
            _check_readable_file(path, where=where, fix="give an agent socket or a private "
                                 "key file this user can read")
        notes.append(f"ssh: {ssh.id} forwarded")
    for name, value in request.build_contexts.items():
        if not URL_CONTEXT_RE.match(value) and not Path(value).is_dir():
            raise ConfigurationError(
                f"build_contexts: {name}={value} is not a directory: give an existing "
                f"directory, or an image as docker-image://{value} (container-image:// for "
                "the build store's)")
        notes.append(f"build_contexts: {name} from {value}")
    return notes


def _check_readable_file(path: str, *, where: str, fix: str) -> None:
    try:
        with open(path, "rb"):
            pass
        if not Path(path).is_file():
            raise IsADirectoryError(21, "not a regular file")
    except OSError as exc:
        raise ConfigurationError(
            f"{where}: cannot read {path} ({exc.strerror or exc}): {fix}") from exc


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _check_socket(path: str, *, where: str) -> None:
    if not _is_socket(path):
        raise ConfigurationError(f"{where} {path} is not a socket (the agent stopped?): start "
                                 "an agent, or name a key file instead")


@dataclass(frozen=True, kw_only=True)
class MountUse:
    """A `RUN --mount=type=secret|ssh` of the Containerfile."""

    line: int
    kind: Literal["secret", "ssh"]
    id: str | None  # None: it names none buildah or we can tell
    required: bool | None  # as written; None when not written (BuildKit: optional)


def _flag_words(rest: str) -> Iterator[str]:
    for word in rest.split():
        if not word.startswith(("--", "\"--", "'--")):
            return
        yield word.strip("\"'")


def mount_uses(text: str) -> list[MountUse]:
    """Every secret and ssh mount of every RUN, with its line."""
    found = []
    for number, keyword, rest in numbered_instructions(text):
        if keyword != "RUN":
            continue
        for word in _flag_words(rest):
            name, _, value = word[2:].partition("=")
            if name.lower() != "mount":
                continue
            fields = {k.strip().lower(): v.strip()
                      for k, _, v in (p.partition("=") for p in value.split(","))}
            kind = fields.get("type")
            if kind not in ("secret", "ssh"):
                continue
            required = fields.get("required")
            written = None if required is None else required.lower() in ("", "true", "1")
            if kind == "secret":
                target = fields.get("target") or fields.get("dst") or fields.get("destination")
                mount_id = fields.get("id") or (target.rstrip("/").rsplit("/", 1)[-1]
                                                if target else None)
            else:
                mount_id = fields.get("id") or "default"
            found.append(MountUse(line=number, kind=kind, id=mount_id or None,  # type: ignore[arg-type]
                                  required=written))
    return found


def check_mounts(text: str, *, secrets: Iterable[str], ssh: Iterable[str],
                 path: str = "Containerfile") -> list[str]:
    """Refuse a secret or ssh mount whose id the build does not give: buildah would run
    the step without it. `required=false` written on the mount lets it be absent."""
    given = {"secret": set(secrets), "ssh": set(ssh)}
    notes: list[str] = []
    used: dict[str, set[str]] = {"secret": set(), "ssh": set()}
    for use in mount_uses(text):
        where = f"{path} line {use.line}: RUN --mount=type={use.kind}"
        if use.id is None or "$" in use.id:
            notes.append(f"secrets: {where} names its id through an ARG or not at all: not "
                         "checked")
            continue
        used[use.kind].add(use.id)
        if use.id in given[use.kind]:
            continue
        if use.required is False:
            notes.append(f"secrets: {where},id={use.id} is not given, and the mount says "
                         "required=false: the step runs without it")
            continue
        field, fix = ("secrets", f"pass --secret id={use.id},src=FILE (or env=VAR, "
                      f"block=BLOCK; on kubernetes {KUBE_SECRET_FLAG} {use.id}=SECRET)") \
            if use.kind == "secret" else ("ssh", f"pass --ssh {use.id} (the agent of "
                                          f"SSH_AUTH_SOCK) or --ssh {use.id}=KEYFILE")
        raise ConfigurationError(
            f"{field}: {where},id={use.id} needs {use.kind} {use.id!r}, which this build does "
            f"not give (buildah would run the step without it): {fix}, or write "
            "required=false on the mount if the step copes without it")
    for kind, ids in given.items():
        unused = sorted(ids - used[kind])
        if unused:
            field = "secrets" if kind == "secret" else "ssh"
            notes.append(f"{field}: {', '.join(unused)} given, but no RUN step of {path} "
                         f"mounts {'it' if len(unused) == 1 else 'them'}")
    return notes


def check_secret_blocks(request: BuildRequest) -> list[str]:
    """Every `block=` names an existing Secret block holding text; only once the flow runs
    (the CLI checks before its temporary Prefect server starts)."""
    from multiarch.credentials import secret_block_value

    notes = []
    for number, secret in enumerate(request.secrets):
        if secret.kind == "block":
            secret_block_value(secret.source, field=f"secrets.{number} ({secret})",
                               holds=f"the value of build secret {secret.id}")
            notes.append(f"secrets: {secret.id} from Secret block {secret.source!r}: found")
    return notes


# --- the plan's flags ---------------------------------------------------------------------

def buildah_flags(request: BuildRequest, secret_files: Iterable[tuple[str, str]] = ()
                  ) -> list[str]:
    """`--secret`, `--ssh` and `--build-context` for `buildah build`: references only (a
    file path, a variable name, an image), never a value.

    `secret_files` are the files the runner provides for an id (a projected Secret in a
    pod, a file the local runner wrote from a Secret block): they win over the request's
    own source, and a block secret needs one."""
    files = dict(secret_files)
    flags: list[str] = []
    for secret in request.secrets:
        if secret.id in files:
            flags += ["--secret", f"id={secret.id},src={files.pop(secret.id)}"]
        elif secret.kind == "block":
            raise ConfigurationError(
                f"secrets: {secret}: this runner wrote no file for the Secret block's value")
        else:
            flags += ["--secret", str(secret)]
    for secret_id, path in files.items():
        flags += ["--secret", f"id={secret_id},src={path}"]
    for ssh in request.ssh:
        flags += ["--ssh", str(ssh)]
    for name, value in request.build_contexts.items():
        flags += ["--build-context", f"{name}={value}"]
    return flags


# --- the local runner: block values as files, and masking ---------------------------------

# A short parent for buildah's TMPDIR link when it forwards an SSH agent: buildah 1.28 binds
# the agent socket at TMPDIR/.buildah-ssh-sockNNN/ssh_auth_sock, and under the build's
# scratch (/var/tmp/multiarch/builds/RUN/PLATFORM/storage/runroot/buildah-tmp) that is
# longer than a unix socket path may be ("bind: invalid argument", measured).
SHORT_TMP_PARENT = "/tmp"  # noqa: S108 - a parent for mkdtemp's private 0700 directory
SHORT_TMP_LINK = "t"


@contextlib.contextmanager
def ssh_tmpdir(request: BuildRequest) -> Iterator[Path | None]:
    """A private directory with a short path that holds the TMPDIR link of a build that
    forwards SSH (None when it forwards none); removed on the way out."""
    if not request.ssh:
        yield None
        return
    directory = Path(tempfile.mkdtemp(prefix="multiarch-ssh-", dir=SHORT_TMP_PARENT))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def block_secret_files(request: BuildRequest, directory: Path) -> tuple[tuple[str, str], ...]:
    """Where the local runner writes each block secret's value (a plan input: paths only)."""
    return tuple((s.id, str(directory / s.id)) for s in request.secrets if s.kind == "block")


@dataclass(kw_only=True)
class LocalSecrets:
    """The values of one platform's build secrets in this process, for writing block
    secrets' files and for masking them in the build's output."""

    directory: Path
    values: list[str]

    def mask(self, line: str) -> str:
        for value in self.values:
            line = line.replace(value, MASK)
        return line

    def forget(self) -> None:
        """Delete the written files (the build step, their only reader, ended)."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def masked(self, error: StepFailure) -> StepFailure:
        """The same failure with any value masked in its message and tail."""
        message = self.mask(str(error))
        tail = [self.mask(line) for line in error.tail]
        if message == str(error) and tail == error.tail:
            return error
        return type(error)(message, step=error.step, exit_code=error.exit_code, tail=tail)


@contextlib.contextmanager
def local_secrets(request: BuildRequest, directory: Path,
                  read_block: Callable[[str, str], str] | None = None
                  ) -> Iterator[LocalSecrets]:
    """Write each block secret to `directory/ID` (directory 0700, files 0600, created so)
    and yield the values to mask; the files are deleted on the way out, whatever happens."""
    read_block = read_block or _read_block
    values: list[str] = []
    files = dict(block_secret_files(request, directory))
    try:
        if files:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(directory, 0o700)
        for number, secret in enumerate(request.secrets):
            if secret.kind == "block":
                value = read_block(secret.source, f"secrets.{number} ({secret})")
                _write_private(Path(files[secret.id]), value.encode())
            elif secret.kind == "env":
                value = os.environ.get(secret.source, "")
            else:
                value = _read_text(secret.source)
            values.append(value)
        yield LocalSecrets(directory=directory, values=mask_values(values))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _read_block(name: str, field: str) -> str:
    from multiarch.credentials import secret_block_value

    return secret_block_value(name, field=field, holds="the build secret's value")


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read(MASK_READ_LIMIT).decode("utf-8", errors="ignore")
    except OSError:
        return ""  # preflight said it was readable; buildah will say what changed


def _write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def mask_values(values: Iterable[str]) -> list[str]:
    """What to mask in output: each value and each of its lines, long ones first."""
    found: set[str] = set()
    for value in values:
        for candidate in (value.strip(), *value.splitlines()):
            candidate = candidate.strip()
            if len(candidate) >= MASK_MIN_LEN:
                found.add(candidate)
    return sorted(found, key=len, reverse=True)


def kube_secret_ref(secret_id: str, value: str) -> tuple[str, str]:
    """`SECRET[/KEY]` of runner.kubernetes.build_secrets -> (Secret name, key); the key is
    the id when not given."""
    name, _, key = value.partition("/")
    return name, key or secret_id
