"""Pin the build source once, so every platform builds the same revision.

A git ref such as `main` can move while platforms build; resolving it to a commit before
the fan-out is what makes the published index one coherent build.

The pinned location is always the URL without credentials: labels, annotations, Job specs
and the publish spec are built from it, so they are clean by construction. git gets the
credentials through a store file (multiarch.credentials), and its errors are redacted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from multiarch import credentials
from multiarch.errors import ConfigurationError, MultiarchError, TransientError
from multiarch.process import capture, is_transient
from multiarch.request import BuildRequest

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
GIT_TIMEOUT_S = 120


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
            epoch=_given_or(request, lambda: epoch.git_commit_time(url, revision, block=block)),
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
    """Run git without prompts; failures become ConfigurationError or, when they look
    passing (network), TransientError, with git's last line in the message, redacted
    (no URL userinfo, none of `secrets`)."""
    try:
        done = capture(argv, what=what, timeout_s=timeout_s, env={"GIT_TERMINAL_PROMPT": "0"})
    except TransientError as exc:
        raise TransientError(credentials.redact(str(exc), secrets or ())) from None
    if not done.ok:
        message = credentials.redact(f"{what} failed: {done.last_error()}", secrets or ())
        raise (TransientError if is_transient(done) else ConfigurationError)(message)
    return done.stdout


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
