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

Ignore files follow buildah 1.28.2 exactly (read from its source, `pkg/parse.
ContainerIgnoreFile`, imagebuilder's `ParseIgnore`, containers/storage's `fileutils.
PatternMatcher`): `<Containerfile>.containerignore` or `<Containerfile>.dockerignore` next to
the Containerfile (the latter wins when both exist), else `.containerignore`, else
`.dockerignore` at the context's root; `#` comments in column 1; `!` exceptions; the last
matching pattern wins; a pattern that matches a directory matches everything under it.
COPY/ADD sources are matched simply and conservatively: a source covers what its glob
names and everything below; a source this cannot read exactly (an unknown variable, a
pattern it cannot compile) covers the whole context; `--from=` copies and URLs send
nothing from the context.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from multiarch import credentials
from multiarch.containerfile import instructions, substitute
from multiarch.errors import ConfigurationError, TransientError
from multiarch.process import capture, is_transient
from multiarch.request import BuildRequest
from multiarch.source import PinnedSource, git_credentials_block, run_git

CONTAINERFILE_NAMES = ("Containerfile", "Dockerfile")  # buildah's lookup, in its order
SHOWN = 10  # files named in the warning; the rest are counted
MAX_LINKS = 40  # symlinks followed in one path before it counts as a loop (Linux: 40)

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


# --- ignore files, as buildah 1.28.2 reads them -------------------------------------------


def go_clean(path: str) -> str:
    """Go's filepath.Clean on `/` paths (normpath differs: `//a`, `a/..` at the root)."""
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    cleaned = ("/" if rooted else "") + "/".join(parts)
    return cleaned or "."


def parse_ignore(text: str) -> list[str]:
    """imagebuilder.ParseIgnore: lines, `#` in column 1 a comment, `/` trimmed both ends."""
    found = []
    for line in text.split("\n"):
        if not line or line[0] == "#":
            continue
        line = line.strip("/")
        if line:
            found.append(line)
    return found


def _ignore_regex(pattern: str) -> re.Pattern[str] | None:
    """fileutils' pattern-to-regexp translation; None for a pattern it cannot compile."""
    out = "^"
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 1
                if i + 1 < n and pattern[i + 1] == "/":
                    i += 1
                out += ".*" if i + 1 >= n else "(.*/)?"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch in ".$":
            out += "\\" + ch
        elif ch == "\\":
            if i + 1 >= n:
                return None
            i += 1
            out += "\\" + pattern[i]
        else:
            out += ch
        i += 1
    try:
        return re.compile(out + "(/.*)?$")
    except re.error:
        return None


@dataclass(frozen=True)
class IgnoreRules:
    """The excludes of one ignore file; `source` names it (None: there is none)."""

    patterns: tuple[tuple[bool, re.Pattern[str] | None], ...] = ()  # (exception?, regexp)
    source: str | None = None

    @classmethod
    def from_lines(cls, excludes: Iterable[str], source: str | None = None) -> IgnoreRules:
        """fileutils.NewPatternMatcher: trimmed, cleaned, `!` an exception."""
        patterns = []
        for raw in excludes:
            pattern = raw.strip()
            if not pattern:
                continue
            pattern = go_clean(pattern)
            exception = pattern.startswith("!")
            if exception:
                if len(pattern) == 1:
                    continue  # buildah refuses the whole file; here: no effect
                pattern = go_clean(pattern[1:]).removeprefix("/")
            patterns.append((exception, _ignore_regex(pattern)))
        return cls(patterns=tuple(patterns), source=source)

    @classmethod
    def from_text(cls, text: str, source: str | None = None) -> IgnoreRules:
        return cls.from_lines(parse_ignore(text), source)

    def excludes(self, path: str) -> bool:
        """Is this context path (relative, `/`) left out? The last match wins; a pattern
        that does not compile matches nothing (so the file counts as sent)."""
        excluded = False
        for exception, regexp in self.patterns:
            if regexp is not None and regexp.match(path):
                excluded = not exception
        return excluded


def ignore_file_candidates(containerfile: str) -> list[str]:
    """Where buildah looks, in order; each a path relative to the context. The first pair
    is one step: of the two beside the Containerfile, `.dockerignore` wins."""
    return [f"{containerfile}.dockerignore", f"{containerfile}.containerignore",
            ".containerignore", ".dockerignore"]


def find_ignore_rules(containerfile: str, read: Callable[[str], bytes | None]) -> IgnoreRules:
    """The ignore rules buildah applies; `read(path)` gives a context file's bytes (symlinks
    followed) or None when it is not there."""
    for candidate in ignore_file_candidates(containerfile):
        data = read(candidate)
        if data is not None:
            return IgnoreRules.from_text(data.decode("utf-8", errors="replace"), candidate)
    return IgnoreRules()


# --- what COPY/ADD sends -----------------------------------------------------------------


_VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_][A-Za-z0-9_]*))")
_URL_SOURCE_RE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|git@)")


@dataclass(frozen=True)
class CopySources:
    """The context paths that the Containerfile's COPY/ADD steps copy (glob patterns)."""

    patterns: tuple[str, ...] = ()
    everything: bool = False  # a source covers the whole context (`.`, or unreadable)

    def covers(self, path: str) -> bool:
        """Is this context path copied: named by a source's glob, or below one?"""
        if self.everything:
            return True
        return any(glob_covers(pattern, path) for pattern in self.patterns)

    def may_reach(self, directory: str) -> bool:
        """Could anything in this context directory be covered (is it worth listing)?"""
        if self.everything:
            return True
        parts = directory.split("/")
        return any(all((regexp := _glob_regex(glob)) is None or regexp.match(part)
                       for glob, part in zip(pattern.split("/"), parts, strict=False))
                   for pattern in self.patterns)

    @property
    def empty(self) -> bool:
        return not self.everything and not self.patterns


def _glob_regex(component: str) -> re.Pattern[str] | None:
    """Go's filepath.Match for one path component; None when it cannot be read."""
    out = ""
    i, n = 0, len(component)
    while i < n:
        ch = component[i]
        if ch == "*":
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[":
            end = component.find("]", i + 2)
            if end < 0:
                return None
            body = component[i + 1:end]
            out += "[" + ("^" + body[1:] if body.startswith("^") else body) + "]"
            i = end
        elif ch == "\\" and i + 1 < n:
            i += 1
            out += re.escape(component[i])
        else:
            out += re.escape(ch)
        i += 1
    try:
        return re.compile(out + r"\Z")
    except re.error:
        return None


def glob_covers(pattern: str, path: str) -> bool:
    """A COPY source (cleaned, relative) covers `path` when its glob matches the path or
    one of its parent directories (a directory is copied with everything in it)."""
    wanted = pattern.split("/")
    parts = path.split("/")
    if len(parts) < len(wanted):
        return False
    for glob, part in zip(wanted, parts, strict=False):
        regexp = _glob_regex(glob)
        if regexp is None:
            return True  # cannot tell: it covers
        if not regexp.match(part):
            return False
    return True


def _split_copy_arguments(rest: str) -> list[str]:
    """Words of COPY/ADD after the flags: JSON (exec) form or whitespace-separated."""
    words = rest.split()
    while words and words[0].startswith("--"):
        words.pop(0)
    text = " ".join(words)
    if text.startswith("["):
        with contextlib.suppress(ValueError):
            parsed = json.loads(text)
            if isinstance(parsed, list) and all(isinstance(w, str) for w in parsed):
                return parsed
    return words


def copy_sources(text: str, build_args: Mapping[str, str]) -> CopySources:
    """Every context source of every COPY/ADD, in any stage (a builder stage's files can
    reach the image through `COPY --from`), variables substituted with what the stage
    knows (its ARGs with their build args, its ENVs); a variable without a known value
    makes the source cover everything. Heredocs, URLs and `--from=` copies are skipped."""
    patterns: list[str] = []
    global_args: dict[str, str | None] = {}
    known: dict[str, str | None] | None = None  # None before the first FROM; None: unknown
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            known = {}
        elif keyword == "ARG":
            for word in rest.split():
                name, sep, default = word.partition("=")
                value = build_args.get(name, default.strip("\"'") if sep else None)
                if known is None:
                    global_args[name] = value
                else:
                    known[name] = value if value is not None else global_args.get(name)
        elif keyword == "ENV" and known is not None:
            for name, value in _env_values(rest).items():
                known[name] = _expand(value, known)
        elif keyword in ("COPY", "ADD") and known is not None:
            if any(word.lower().startswith("--from=") for word in rest.split()
                   if word.startswith("--")):
                continue
            for source in _split_copy_arguments(rest)[:-1]:
                if source.startswith("<<") or _URL_SOURCE_RE.match(source):
                    continue
                expanded = _expand(source, known)
                cleaned = go_clean("/" + expanded).lstrip("/") if expanded is not None else ""
                if cleaned in ("", "."):
                    return CopySources(everything=True)
                patterns.append(cleaned)
    return CopySources(patterns=tuple(dict.fromkeys(patterns)))


def _expand(value: str, known: Mapping[str, str | None]) -> str | None:
    """`value` with its variables substituted; None when one has no known value."""
    names = [braced or plain for braced, plain in _VAR_RE.findall(value)]
    if any(known.get(name) is None for name in names):
        return None
    return substitute(value, {name: known[name] or "" for name in names})


def _env_values(rest: str) -> dict[str, str]:
    first = rest.split(maxsplit=1)[0] if rest.strip() else ""
    if "=" not in first:  # legacy `ENV NAME value with spaces`
        name, _, value = rest.partition(" ")
        return {name: value.strip()} if name else {}
    values = {}
    for word in rest.split():
        name, _, value = word.partition("=")
        values[name] = value.strip("\"'")
    return values


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


@dataclass(frozen=True)
class Resolution:
    """Where a context path leads: `path` inside the tree, or `escape`, the link text that
    led out of it (an absolute target, or one climbing above the root)."""

    path: str | None
    escape: str | None = None
    link: str | None = None  # the symlink whose target is `escape`


class LinkLoop(Exception):
    pass


def resolve_in_tree(path: str, link_target: Callable[[str], str | None]) -> Resolution:
    """Follow symlinks at every level of `path` inside a tree, the way the kernel does
    (`..` after a link applies to where the link led). `link_target(p)` is the link text
    of `p`, or None when `p` is not a symlink. Raises LinkLoop after MAX_LINKS links."""
    pending = list(reversed(path.split("/")))
    resolved: list[str] = []
    last_link: tuple[str, str] | None = None  # (link, its text): what led where we are
    hops = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                link, text = last_link or (None, path)
                return Resolution(None, escape=text, link=link)
            resolved.pop()
            continue
        candidate = "/".join([*resolved, part])
        target = link_target(candidate)
        if target is None:
            resolved.append(part)
            continue
        hops += 1
        if hops > MAX_LINKS:
            raise LinkLoop(candidate)
        if target.startswith("/"):
            return Resolution(None, escape=target, link=candidate)
        last_link = (candidate, target)
        pending.extend(reversed(target.split("/")))
    return Resolution("/".join(resolved))


def outside_message(name: str, where: str, *, context: str) -> ConfigurationError:
    """`context`: which context, as a phrase; `where`: the file the path leads to, or the
    link that leads out and its text."""
    return ConfigurationError(
        f"containerfile: {name} resolves through a symlink outside {context} "
        f"({where}), so buildah would read that file from the machine that builds: replace "
        "the link by the file itself, or point it at a file inside the context")


def loop_message(name: str) -> ConfigurationError:
    return ConfigurationError(
        f"containerfile: {name} is a symlink loop (more than {MAX_LINKS} links): point it "
        "at a file inside the context")


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
