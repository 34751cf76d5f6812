"""What a build context would put into the image that should not be there.

Two ways a build leaks what it should not, both checked before any build starts:

- secret-looking files (a `.git` directory, `.env`, ssh private keys, `*.pem`...) that a
  `COPY`/`ADD` of the Containerfile covers and no ignore file excludes: one warning line
  naming them. A `.git/config` with a credential in a URL (`https://user:token@host/...`)
  among them is refused unless `allow_secret_files` is set; the credential is never shown.
- a Containerfile that resolves, through symlinks at any level, outside the context:
  buildah follows the link and reads that file from the machine that builds. Refused, for
  local and git contexts alike; a symlink that stays inside the context is fine, and the
  bytes of the file it resolves to are what the provenance's digest covers.

Ignore files are read as buildah does in `multiarch.ignore_rules`, what COPY/ADD send in
`multiarch.copy_sources`, and symlinks resolved inside a tree in `multiarch.context_links`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from multiarch import credentials
from multiarch.context_links import (
    LinkLoop,
    Resolution,
    loop_message,
    outside_message,
    resolve_in_tree,
)
from multiarch.copy_sources import CopySources, copy_sources
from multiarch.errors import ConfigurationError, TransientError
from multiarch.ignore_rules import IgnoreRules, find_ignore_rules
from multiarch.process import capture, is_transient
from multiarch.request import BuildRequest
from multiarch.source import PinnedSource, git_credentials_block, run_git

CONTAINERFILE_NAMES = ("Containerfile", "Dockerfile")  # buildah's lookup, in its order
SHOWN = 10  # files named in the warning; the rest are counted

# What looks secret, by name (case-insensitive), anywhere in the context:
SECRET_DIRS = (".git",)  # shown as `.git/`; their config is read for credentials
SECRET_NAMES = (
    ".env", ".npmrc", ".netrc", "_netrc", ".pypirc", ".git-credentials", ".pgpass",
    ".htpasswd", ".vault-token",
    "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "id_ecdsa_sk", "id_ed25519_sk",
)
SECRET_GLOBS = (".env.*", "*.pem", "*.key", "*.p12", "*.pfx", "*.ppk", "ssh_host_*_key")
SECRET_PATH_SUFFIXES = (".docker/config.json", ".aws/credentials", ".kube/config")
# Committed templates of an .env, by convention without values:
NOT_SECRET = (".env.example", ".env.sample", ".env.template", ".env.dist")

ALLOW_FLAG = "--allow-secret-files (allow_secret_files: true)"


# --- what looks secret ---------------------------------------------------------------------


def looks_secret(path: str, *, is_dir: bool = False) -> bool:
    """Does this context path (relative, `/`-separated) look like it holds a secret?"""
    lower = path.lower()
    name = lower.rsplit("/", 1)[-1]
    if is_dir:
        return name in SECRET_DIRS
    if name in NOT_SECRET:
        return False
    if name in SECRET_NAMES or any(fnmatch.fnmatchcase(name, g) for g in SECRET_GLOBS):
        return True
    return any(lower == suffix or lower.endswith("/" + suffix) for suffix in SECRET_PATH_SUFFIXES)


# Known token shapes that may stand alone as a URL's user name (GitHub, GitLab).
_TOKEN_USER_RE = re.compile(r"^(gh[pousr]_|github_pat_|glpat-)|^[A-Za-z0-9_-]{32,}$")
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>\]]+")
_AUTH_HEADER_RE = re.compile(r"^\s*extraheader\s*=.*\bauthorization\s*:", re.I | re.M)


def git_config_has_credentials(text: str) -> bool:
    """A URL with a password (`user:secret@`) or a token as its user name, or an
    Authorization `extraheader` (what CI checkouts persist). A plain user name
    (`https://alice@host`, `ssh://git@host`) is not a credential."""
    if _AUTH_HEADER_RE.search(text):
        return True
    for url in _URL_RE.findall(text):
        netloc = url.split("://", 1)[1].split("/", 1)[0]
        userinfo = netloc.rpartition("@")[0]
        if not userinfo:
            continue
        user, _, password = userinfo.partition(":")
        if password or _TOKEN_USER_RE.search(user):
            return True
    return False


# --- the verdict, from a listing -----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Entry:
    """A secret-looking path of a context: a file (or symlink), or a `.git` directory."""

    path: str
    is_dir: bool = False

    @property
    def shown(self) -> str:
        return self.path + "/" if self.is_dir else self.path

    def probes(self) -> list[str]:
        """Paths whose fate is this entry's: a `.git` directory is sent when its config or
        its HEAD is (an ignore file may leave out only parts of it)."""
        return [f"{self.path}/config", f"{self.path}/HEAD"] if self.is_dir else [self.path]


def sent(path: str, sources: CopySources, rules: IgnoreRules) -> bool:
    """Does a COPY/ADD copy this context path into the image, past the ignore file?"""
    return sources.covers(path) and not rules.excludes(path)


def flagged(entries: Iterable[Entry], sources: CopySources, rules: IgnoreRules) -> list[Entry]:
    """The entries a COPY/ADD covers and no ignore pattern excludes, sorted by path."""
    return sorted((e for e in entries if any(sent(p, sources, rules) for p in e.probes())),
                  key=lambda e: e.path)


@dataclass(frozen=True, kw_only=True)
class Verdict:
    flagged: list[Entry] = field(default_factory=list)
    credentialed: list[str] = field(default_factory=list)  # git config files with a secret


def warning_line(verdict: Verdict, *, fix_file: str, rules: IgnoreRules) -> str | None:
    """The one warning line (None when nothing is flagged): the first SHOWN paths, a count
    of the rest, and the ignore file that would fix it."""
    if not verdict.flagged:
        return None
    names = [entry.shown for entry in verdict.flagged]
    shown = ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more"
                                         if len(names) > SHOWN else "")
    one = len(names) == 1
    them = "it" if one else "them"
    why = (f"{rules.source} does not exclude {them}" if rules.source
           else f"no .containerignore or .dockerignore excludes {them}")
    if verdict.credentialed:
        why += (f"; {', '.join(verdict.credentialed)} holds a credential (not shown), copied "
                "as allow_secret_files is set")
    return (f"context: WARNING: the Containerfile's COPY/ADD would copy {len(names)} "
            f"{'path that looks' if one else 'paths that look'} secret into the image: "
            f"{shown} ({why}): list {them} in {fix_file}, or remove {them} from the context")


def refusal(credentialed: list[str], *, fix_file: str) -> ConfigurationError:
    where = credentialed[0] + (f" (and {len(credentialed) - 1} more)" if len(credentialed) > 1
                               else "")
    directory = credentialed[0].rsplit("/", 1)[0]
    return ConfigurationError(
        f"context: {where} holds a credential in a URL (not shown) and the Containerfile's "
        f"COPY/ADD would copy it into the image: add {directory} to {fix_file}, or pass "
        f"{ALLOW_FLAG} to build anyway")


# --- symlinks ------------------------------------------------------------------------------


def local_containerfile(request: BuildRequest, context: Path) -> tuple[str, Path]:
    """(the name buildah uses, the file it reads), refused when that file is outside the
    context (`context` already resolved). The name is the request's, or buildah's lookup."""
    names = (request.containerfile,) if request.containerfile else CONTAINERFILE_NAMES
    for name in names:
        if (context / name).is_file():
            break
    else:
        raise ConfigurationError(f"containerfile: none of {', '.join(names)} in the context")
    try:
        real = Path(os.path.realpath(context / name, strict=True))
    except OSError as exc:  # ELOOP: is_file() said yes only if it resolved, so a loop
        raise loop_message(name) from exc
    if real != context and context not in real.parents:
        raise outside_message(name, f"it points to {real}", context=f"the context {context}")
    return name, real


# --- listings ------------------------------------------------------------------------------


def local_entries(context: Path, sources: CopySources | None = None) -> Iterator[Entry]:
    """Secret-looking entries of a local context; `.git` directories are not descended,
    nor (given `sources`) directories that no COPY/ADD source reaches."""
    for root, dirs, files in os.walk(context):
        relative_root = Path(root).relative_to(context).as_posix()
        prefix = "" if relative_root == "." else relative_root + "/"
        for name in list(dirs):
            path = Path(root) / name
            if path.is_symlink():  # copied as a link, never followed
                dirs.remove(name)
                if looks_secret(prefix + name):
                    yield Entry(path=prefix + name)
            elif looks_secret(prefix + name, is_dir=True):
                dirs.remove(name)
                yield Entry(path=prefix + name, is_dir=True)
            elif sources is not None and not sources.may_reach(prefix + name):
                dirs.remove(name)
        for name in files:
            if looks_secret(prefix + name):
                yield Entry(path=prefix + name)


def git_configs(directory: Path) -> list[Path]:
    """A `.git` directory's config, and its submodules' (under modules/)."""
    found = [directory / "config"] if (directory / "config").is_file() else []
    modules = directory / "modules"
    if modules.is_dir():
        found += sorted(p for p in modules.rglob("config") if p.is_file())
    return found


def _read_local(context: Path, relative: str) -> bytes | None:
    path = context / relative
    try:
        return path.read_bytes() if path.is_file() else None
    except OSError:
        return None


def check_local(request: BuildRequest, context: Path) -> list[str]:
    """A local context: the Containerfile inside it, and what COPY/ADD would leak."""
    context = context.resolve()
    name, real = local_containerfile(request, context)
    sources = copy_sources(real.read_bytes().decode("utf-8", errors="replace"),
                           request.build_args)
    if sources.empty:
        return []
    rules = find_ignore_rules(name, lambda relative: _read_local(context, relative))
    entries = flagged(local_entries(context, sources), sources, rules)
    credentialed = []
    for entry in entries:
        if not entry.is_dir:
            continue
        for config in git_configs(context / entry.path):
            relative = config.relative_to(context).as_posix()
            if not sent(relative, sources, rules):
                continue
            with contextlib.suppress(OSError):
                if git_config_has_credentials(config.read_text(errors="replace")):
                    credentialed.append(relative)
    fix_file = str(context / (rules.source or ".containerignore"))
    if credentialed and not request.allow_secret_files:
        raise refusal(credentialed, fix_file=fix_file)
    line = warning_line(Verdict(flagged=entries, credentialed=credentialed),
                        fix_file=fix_file, rules=rules)
    return [line] if line else []


# --- git contexts --------------------------------------------------------------------------


@dataclass(kw_only=True)
class GitTree:
    """One commit's tree in a blobless clone: paths and modes at once, blobs on demand."""

    directory: str
    revision: str
    helper: tuple[str, ...]
    secrets: list[str]
    url: str
    entries: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (mode, sha)

    def list(self) -> None:
        output = run_git(["git", *self.helper, "-C", self.directory, "ls-tree", "-r", "-t",
                          "-z", "--full-tree", self.revision],
                         what=f"listing the files of {self.url} at {self.revision}",
                         secrets=self.secrets)
        for record in output.split("\0"):
            meta, tab, path = record.partition("\t")
            if not tab:
                continue
            mode, _kind, sha = meta.split(" ")
            self.entries[path] = (mode, sha)

    def blob(self, sha: str) -> bytes:
        what = f"reading a file of {self.url} at {self.revision}"
        try:
            done = capture(["git", *self.helper, "-C", self.directory, "cat-file", "blob", sha],
                           what=what, timeout_s=120, env={"GIT_TERMINAL_PROMPT": "0"})
        except TransientError as exc:
            raise TransientError(credentials.redact(str(exc), self.secrets)) from None
        if not done.ok:
            message = credentials.redact(f"{what} failed: {done.last_error()}", self.secrets)
            raise (TransientError if is_transient(done) else ConfigurationError)(message)
        return done.output

    def link_target(self, path: str) -> str | None:
        entry = self.entries.get(path)
        if entry is None or entry[0] != "120000":
            return None
        return self.blob(entry[1]).decode("utf-8", errors="replace")

    def resolve(self, path: str) -> Resolution:
        return resolve_in_tree(path, self.link_target)

    def read(self, path: str) -> bytes | None:
        """A file's bytes, symlinks followed inside the tree; None when it is not a file
        there, or leads out of the tree (see `containerfile` for the refusal)."""
        with contextlib.suppress(LinkLoop):
            resolution = self.resolve(path)
            entry = self.entries.get(resolution.path or "")
            if resolution.path is not None and entry and entry[0] in ("100644", "100755"):
                return self.blob(entry[1])
        return None

    def containerfile(self, names: tuple[str, ...]) -> tuple[str, bytes] | None:
        """(name, bytes) of the first of `names` that is a file, as buildah finds it (a
        link is followed); refused when that leads out of the repository."""
        for name in names:
            try:
                resolution = self.resolve(name)
            except LinkLoop:
                raise loop_message(name) from None
            if resolution.path is None:
                where = (f"{resolution.link} -> {resolution.escape}" if resolution.link
                         else resolution.escape)
                raise outside_message(name, where, context=f"the checkout of {self.url}")
            data = self.read(resolution.path)
            if data is not None:
                return name, data
        return None

    def secret_entries(self) -> Iterator[Entry]:
        # the build's checkout has no `.git` (multiarch.source.FETCH_SCRIPT keeps it apart)
        for path, (mode, _sha) in self.entries.items():
            if mode == "040000":
                if looks_secret(path, is_dir=True):
                    yield Entry(path=path, is_dir=True)
            elif mode != "160000" and looks_secret(path):
                yield Entry(path=path)


@contextlib.contextmanager
def git_tree(source: PinnedSource, *, block: str | None = None) -> Iterator[GitTree]:
    """A blobless clone of a pinned git source, its tree listed; removed afterwards."""
    lines = credentials.credential_lines(block)
    secrets = credentials.secrets_of(lines)
    url = credentials.clean_url(source.location)
    with tempfile.TemporaryDirectory(prefix="multiarch-tree-") as scratch, \
            credentials.temporary_store(lines) as store:
        helper = credentials.helper_config(store)
        run_git(["git", *helper, "clone", "--quiet", "--no-checkout", "--filter=blob:none",
                 "--", url, scratch],
                what=f"reading the files of {url}", timeout_s=300, secrets=secrets)
        tree = GitTree(directory=scratch, revision=source.revision or "HEAD", helper=helper,
                       secrets=secrets, url=url)
        tree.list()
        yield tree


def check_git(request: BuildRequest, source: PinnedSource) -> list[str]:
    """A pinned git context: its Containerfile inside the repository, and what COPY/ADD
    would copy from the checkout (the committed files: the checkout has no `.git`)."""
    names = (request.containerfile,) if request.containerfile else CONTAINERFILE_NAMES
    with git_tree(source, block=git_credentials_block(request)) as tree:
        found = tree.containerfile(names)
        if found is None:
            raise ConfigurationError(
                f"containerfile: none of {', '.join(names)} at {source.revision}")
        name, data = found
        sources = copy_sources(data.decode("utf-8", errors="replace"), request.build_args)
        if sources.empty:
            return []
        rules = find_ignore_rules(name, tree.read)
        entries = flagged(tree.secret_entries(), sources, rules)
    fix_file = f"{rules.source or '.containerignore'} in the repository"
    line = warning_line(Verdict(flagged=entries), fix_file=fix_file, rules=rules)
    return [line] if line else []


def check_context_hygiene(request: BuildRequest, source: PinnedSource) -> list[str]:
    """The preflight check: notes (at most one warning line); ConfigurationError for a
    Containerfile outside the context or a credentialed git config that would be copied."""
    if source.kind == "git":
        return check_git(request, source)
    return check_local(request, Path(source.location))
