"""Pin the build source once, so every platform builds the same revision.

A git ref such as `main` can move while platforms build; resolving it to a commit before
the fan-out is what makes the published index one coherent build.

The pinned location is always the URL without credentials: labels, annotations, Job specs
and the publish spec are built from it, so they are clean by construction. git gets the
credentials through a store file (multiarch.credentials), and its errors are redacted.

Any git server has to work, a static web server holding a bare repository ("dumb" HTTP)
included: it can neither send a shallow history nor filter objects, so every fetch here
has a plain fallback that git's own answer selects (see `git_commit_time`), and every
git call has a deadline that ends git and all it started, and that is not retried.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from multiarch import credentials
from multiarch.errors import ConfigurationError, MultiarchError, PermanentError, TransientError
from multiarch.process import Captured, capture, is_transient
from multiarch.request import BuildRequest

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
GIT_TIMEOUT_S = 120
# curl (git's HTTP transport) gives up on a transfer that moves less than 1 byte a second
# for this long: a server that accepts the connection and then says nothing fails in
# GIT_STALL_S, not GIT_TIMEOUT_S. A working server never goes that quiet: upload-pack
# sends a keep-alive every 5 s while it prepares a pack.
GIT_STALL_S = 30
STALL_CONFIG = ("-c", "http.lowSpeedLimit=1", "-c", f"http.lowSpeedTime={GIT_STALL_S}")
STALL_ANSWER = "operation too slow"  # curl's words when the stall limit ends a transfer
# coreutils timeout(1) runs git in a process group of its own and signals that whole group:
# git's children (remote-http, index-pack, lazy fetches) end with it, where a deadline on
# git alone would leave them running. It exits with TIMEOUT_EXIT when the deadline hit.
TIMEOUT_EXIT = 124
KILL_GRACE_S = 5
# No prompt can block a run; LC_ALL=C keeps git's messages in the English that
# multiarch.failures and DUMB_HTTP_ANSWER read, whatever the worker's locale.
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
# What git answers when asked for a shallow fetch from a dumb HTTP server (remote-curl.c,
# unchanged since git 1.9): the one place it says which kind of server it talks to.
DUMB_HTTP_ANSWER = "dumb http transport does not support shallow"
ALL_REFS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
# git's subcommands this project runs, to name the one that timed out
GIT_COMMANDS = frozenset({"ls-remote", "fetch", "clone", "checkout", "init", "log", "ls-tree",
                          "cat-file"})


class PinnedSource(BaseModel):
    """The source every platform builds: a local directory, or a git URL at one commit."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["local", "git"]
    location: str  # absolute directory, or the git URL without credentials
    revision: str | None = None  # commit SHA when known
    ref: str | None = None  # what the user asked for
    # SOURCE_DATE_EPOCH of every image, layer file and the index (multiarch.epoch)
    epoch: int | None = None


def pin_source(request: BuildRequest) -> PinnedSource:
    """The source every platform builds, with its time: a git ref resolved to one commit."""
    from multiarch import epoch  # not at the top: epoch runs git through run_git below

    if request.is_git:
        ref = request.git_ref or "HEAD"
        # Normally the CLI or the flow has done this already; here it is the safety net.
        url = credentials.move_to_environment(request.context)
        block = git_credentials_block(request)
        revision = resolve_git_ref(url, ref, block=block)
        return PinnedSource(
            kind="git",
            location=url,
            ref=ref,
            revision=revision,
            epoch=_given_or(request, lambda: git_commit_time(url, revision, block=block)),
        )
    directory = Path(request.context).resolve()
    revision = local_revision(directory)
    return PinnedSource(
        kind="local",
        location=str(directory),
        revision=revision,
        epoch=_given_or(request, lambda: epoch.local_epoch(directory, revision=revision)),
    )


def _given_or(request: BuildRequest, compute: Callable[[], int]) -> int:
    """The user's source_date_epoch wins; otherwise the source's own time."""
    if request.source_date_epoch is not None:
        return request.source_date_epoch
    return compute()


def git_credentials_block(request: BuildRequest) -> str | None:
    """The Secret block a run reads git credentials from, if it names one."""
    return request.runner.git_credentials_block


def resolve_git_ref(url: str, ref: str, *, block: str | None = None) -> str:
    """Resolve a branch or tag to a commit with `git ls-remote`; a full SHA is kept as is."""
    if COMMIT_RE.match(ref):
        return ref
    url = credentials.clean_url(url)
    lines = credentials.credential_lines(block)
    with credentials.temporary_store(lines) as store:
        output = run_git(
            ["git", *credentials.helper_config(store), "ls-remote", "--", url, ref],
            what=f"listing refs of {url}",
            secrets=credentials.secrets_of(lines),
        )
    refs: dict[str, str] = {}
    for line in output.splitlines():
        sha, _, name = line.partition("\t")
        refs[name] = sha
    for name in (
        f"{ref}^{{}}",
        f"refs/tags/{ref}^{{}}",
        ref,
        f"refs/heads/{ref}",
        f"refs/tags/{ref}",
    ):
        if name in refs:
            return refs[name]
    raise ConfigurationError(
        f"git_ref {ref!r} was not found in {url}: give a branch, tag or full commit SHA"
    )


def local_revision(directory: Path) -> str | None:
    """The commit of a clean git work tree holding the context, else None (not pinnable).

    A context inside an ignored directory (a generated one under `.local/`) is not in the
    commit at all, and `git status` shows nothing for it: without the check-ignore it would
    be labelled with HEAD, and `rebuild: if-changed` would rebuild it after every commit.
    """
    try:
        head = capture(["git", "-C", str(directory), "rev-parse", "HEAD"],
                       what="reading the context's commit", timeout_s=30)
        if not head.ok:
            return None
        ignored = capture(["git", "-C", str(directory), "check-ignore", "--quiet", "."],
                          what="checking the context is tracked", timeout_s=30)
        if ignored.exit_code == 0:
            return None
        status = capture(["git", "-C", str(directory), "status", "--porcelain", "--", "."],
                         what="checking the context is clean", timeout_s=30)
    except MultiarchError:  # no git, or it hangs: the context is simply not pinnable
        return None
    if not status.ok or status.stdout.strip():
        return None
    return head.stdout.strip() or None


def run_git(argv: list[str], *, what: str, timeout_s: int = GIT_TIMEOUT_S,
            secrets: list[str] | None = None) -> str:
    """Run git without prompts, within `timeout_s` and the stall limit; failures become
    ConfigurationError or, when they look passing (network), TransientError, and running
    out of time or of data a PermanentError (`gave_up` says why that is not retried), with
    git's last line in the message, redacted (no URL userinfo, none of `secrets`)."""
    done = run_bounded(argv, what=what, timeout_s=timeout_s, secrets=secrets)
    if not done.ok and STALL_ANSWER in done.last_error().lower():
        raise gave_up(argv, what=what, secrets=secrets,
                      how=f"received nothing for {GIT_STALL_S} s")
    if not done.ok:
        message = credentials.redact(f"{what} failed: {done.last_error()}", secrets or ())
        raise (TransientError if is_transient(done) else ConfigurationError)(message)
    return done.stdout


def run_bounded(argv: list[str], *, what: str, timeout_s: int,
                secrets: list[str] | None = None) -> Captured:
    """git under timeout(1) with curl's stall limit: a silent server or a git that loops
    (a filtered fetch from a dumb server) ends on time, and nothing of it outlives us."""
    if shutil.which(argv[0]) is None:
        raise ConfigurationError(f"{what}: git is not installed: install the Debian package git")
    bounded = ["timeout", f"--kill-after={KILL_GRACE_S}", str(timeout_s),
               argv[0], *STALL_CONFIG, *argv[1:]]
    late = f"did not finish within {timeout_s} s"
    try:
        done = capture(bounded, what=what, timeout_s=timeout_s + 2 * KILL_GRACE_S, env=GIT_ENV)
    except TransientError:  # capture's backstop: timeout(1) itself did not end
        raise gave_up(argv, what=what, secrets=secrets, how=late) from None
    if done.exit_code == TIMEOUT_EXIT:
        raise gave_up(argv, what=what, secrets=secrets, how=late)
    return done


def gave_up(argv: list[str], *, what: str, how: str,
            secrets: list[str] | None = None) -> PermanentError:
    """Running out of time (or of data) is permanent: never retried at full length, and
    no fallback fetch is tried after it.

    A network blip makes git fail within seconds (refused, reset, early EOF: those stay
    transient). A deadline or the stall limit running out means a server that accepts
    connections and does not answer git, or a transfer too slow for it: a second try
    waits as long for the same result (three of them kept a run waiting 6.5 minutes).
    """
    command = next((arg for arg in argv[1:] if arg in GIT_COMMANDS), "git")
    url = argv[argv.index("--") + 1] if "--" in argv[:-1] else None
    where = f" of {credentials.clean_url(url)}" if url else ""
    message = (f"{what}: git {command}{where} {how} (not retried: a server that does not "
               "answer in that time rarely does on the next try); check that the server "
               "answers git, e.g. with git ls-remote")
    return PermanentError(credentials.redact(message, secrets or ()))


def git_commit_time(url: str, revision: str, *, block: str | None = None) -> int:
    """The committer time of `revision` at `url`, without a checkout or any file content.

    Cheapest first (`CommitTimeFetch`): one commit without trees, which smart servers
    send; a dumb HTTP server, which git names when asked for depth 1, gets a plain fetch
    of the commit (dumb HTTP can only send whole objects, so its history comes too); any
    other refusal (a protocol v0 server refusing an unadvertised SHA) a treeless fetch of
    every branch and tag. Credentials reach git as a store file, as for `resolve_git_ref`.
    """
    from multiarch.epoch import parse_epoch  # not at the top: epoch imports this module

    url = credentials.clean_url(url)
    lines = credentials.credential_lines(block)
    with credentials.temporary_store(lines) as store:
        fetch = CommitTimeFetch(url=url, revision=revision,
                                helper=credentials.helper_config(store),
                                secrets=credentials.secrets_of(lines))
        output = fetch.committer_time()
    return parse_epoch(output, what=f"commit {revision} of {url}")


@dataclass(frozen=True, kw_only=True)
class CommitTimeFetch:
    """The fetches `git_commit_time` tries, each into a scratch repository of its own.

    A fresh one each time because a failed filtered fetch has already marked its
    repository a promisor of the URL; with a dumb server behind it, any object missing
    there afterwards starts a lazy fetch that starts another, without end (measured:
    thousands of git processes in 10 s, the "hang" of a dumb HTTP context).
    """

    url: str
    revision: str
    helper: tuple[str, ...]
    secrets: list[str]

    @property
    def what(self) -> str:
        return f"reading the time of commit {self.revision} from {self.url}"

    def committer_time(self) -> str:
        """`git log` output after the cheapest fetch the server allows."""
        try:
            return self.after_fetch("--depth=1", "--filter=tree:0", "--", self.url,
                                    self.revision)
        except ConfigurationError as refused:
            if DUMB_HTTP_ANSWER in str(refused):
                return self.after_fetch("--", self.url, self.revision)
            return self.after_fetch("--filter=tree:0", "--", self.url, *ALL_REFS)

    def after_fetch(self, *fetch_args: str) -> str:
        """Fetch with these arguments into a new scratch repository, then read the time."""
        with tempfile.TemporaryDirectory(prefix="multiarch-epoch-") as scratch:
            run_git(["git", "init", "--quiet", "--bare", scratch],
                    what="preparing a scratch repo")
            git = ["git", *self.helper, "-C", scratch]
            run_git([*git, "fetch", "--quiet", *fetch_args], what=self.what,
                    secrets=self.secrets)
            return run_git([*git, "log", "-1", "--format=%ct", self.revision, "--"],
                           what=self.what, secrets=self.secrets)


# The build's checkout, as BuildKit makes a git context: the pinned commit's files and no
# `.git`, so `COPY . /src` never ships the repository (its history, its config with the
# URL). git keeps its metadata beside the context in "$dir.git" (--separate-git-dir), and
# the `.git` file pointing there is removed once the commit is checked out; the commit is
# pinned before (PinnedSource.revision), so the build needs nothing from it. Clone and
# check out in one step, so that only this step (one container in a pod) needs the
# credentials: checking out a blobless clone fetches blobs from the remote too. A dumb
# HTTP server ignores the filter and sends everything, which checkout then finds. The
# values arrive as "$1".."$3" and git's own options as "$@" (multiarch.plan.fetch_steps);
# nothing is formatted into it but the stall limit's constants.
FETCH_SCRIPT = (
    'url=$1 dir=${2%/} rev=$3; shift 3; '
    f'set -- {" ".join(STALL_CONFIG)} "$@"; '
    'git "$@" clone --quiet --no-checkout --filter=blob:none --separate-git-dir="$dir.git" '
    '-- "$url" "$dir" && '
    'git "$@" -C "$dir" checkout --quiet --detach "$rev" && '
    'exec rm -f -- "$dir/.git"'
)


def write_git_store(request: BuildRequest, path: Path) -> str | None:
    """Write the run's git credentials (0600) where a fetch step's git reads them; None
    when the run has none, so its git runs without a credential helper.

    The local runner puts it in the run's scratch: removed with it, and by the sweep of a
    killed run.
    """
    lines = credentials.credential_lines(git_credentials_block(request))
    if not lines:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(credentials.write_store(path, lines))


CONTEXT_CREDENTIALS_WARNING = (
    "context {url} was given with credentials in the URL: Prefect has already stored this "
    "flow run's parameters with them. The build uses them from the run's environment and "
    "shows only the URL without them; rotate that token, and give credentials through a "
    "Secret block (runner.git_credentials_block), env {file_env} or, on Kubernetes, "
    "runner.kubernetes.git_credentials_secret instead"
)


def without_context_credentials(request: BuildRequest,
                                warn: Callable[[str], None]) -> BuildRequest:
    """A deployment passed `context` with userinfo: keep it working (the credential moves to
    the run's environment), strip it from everything after this point, and say why that
    is too late for the stored parameters."""
    if not request.is_git or not credentials.has_credentials(request.context):
        return request
    clean = credentials.move_to_environment(request.context)
    warn(CONTEXT_CREDENTIALS_WARNING.format(url=clean,
                                            file_env=credentials.ENV_CREDENTIALS_FILE))
    return request.model_copy(update={"context": clean})
