"""The source's time, pinned once per run: what makes two builds of one revision equal.

buildah stamps the current time into the image config, every history entry and every
file of a layer, and publish stamps it into the index: without a fixed time no two
builds have the same digest. The time chosen is the source's own (SOURCE_DATE_EPOCH, as
reproducible-builds.org defines it), read once before the fan-out so that every platform
and the index carry the same value:

- the user's `source_date_epoch`, when given;
- a git context: the pinned commit's committer time;
- a local directory that is a clean git work tree (its commit is pinned): that commit's
  committer time, so that two checkouts of one revision build the same image although
  their files were written at different times;
- any other local directory: the newest modification time of its regular files.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from multiarch import credentials
from multiarch.errors import ConfigurationError, MultiarchError
from multiarch.process import capture
from multiarch.source import run_git

LOCAL_GIT_TIMEOUT_S = 30
EXCLUDED_DIRS = frozenset({".git"})


def git_commit_time(url: str, revision: str, *, block: str | None = None) -> int:
    """The committer time of `revision` at `url`, without a checkout or any file content.

    A throw-away bare repository fetches that one commit (depth 1) without its trees
    (`--filter=tree:0`): one commit object, whatever the size of the repository. A server
    that does not allow filters (git's own default for file:// and plain git daemons)
    sends that commit's snapshot instead, still without history. Protocol v2 servers serve
    any commit by SHA; an older server that refuses gets a treeless fetch of every branch
    and tag. Credentials reach git as a store file, as for `resolve_git_ref`; errors are
    redacted and classified (transient or not) by `run_git`.
    """
    url = credentials.clean_url(url)
    lines = credentials.credential_lines(block)
    secrets = credentials.secrets_of(lines)
    with tempfile.TemporaryDirectory(prefix="multiarch-epoch-") as scratch, \
            credentials.temporary_store(lines) as store:
        git = ["git", *credentials.helper_config(store), "-C", scratch]
        run_git(["git", "init", "--quiet", "--bare", scratch], what="preparing a scratch repo")
        what = f"reading the time of commit {revision} from {url}"
        try:
            run_git([*git, "fetch", "--quiet", "--depth=1", "--filter=tree:0", "--", url,
                     revision], what=what, secrets=secrets)
        except ConfigurationError:
            run_git([*git, "fetch", "--quiet", "--filter=tree:0", "--", url,
                     "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
                    what=what, secrets=secrets)
        output = run_git([*git, "log", "-1", "--format=%ct", revision, "--"],
                         what=what, secrets=secrets)
    return parse_epoch(output, what=f"commit {revision} of {url}")


def local_commit_time(directory: Path) -> int | None:
    """HEAD's committer time of the work tree holding `directory`; None if git cannot say."""
    try:
        done = capture(["git", "-C", str(directory), "log", "-1", "--format=%ct", "HEAD", "--"],
                       what=f"reading the commit time of {directory}",
                       timeout_s=LOCAL_GIT_TIMEOUT_S)
    except MultiarchError:  # no git, or it hangs: the caller falls back to file times
        return None
    if not done.ok:
        return None
    try:
        return parse_epoch(done.stdout, what=f"HEAD of {directory}")
    except ConfigurationError:
        return None


def newest_file_time(directory: Path) -> int:
    """The newest modification time of the regular files under `directory`, in seconds.

    Only regular files count: they are what a build copies in. Directories are left out
    (their time moves when anything is created or removed beside them, an editor's swap
    file for instance) and so are symlinks (their own time is rarely meaningful). `.git`
    directories are skipped: git rewrites its index and refs without the work tree
    changing, and the rebuild fingerprint (multiarch.rebuild.tree_digest) leaves them out
    too. Files a .containerignore excludes still count: following buildah's ignore syntax
    here would be a second parser that can disagree with buildah's, and counting too much
    only moves the timestamp, never the content. A directory without regular files (not
    buildable anyway) gives its own time.
    """
    newest: float | None = None
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if d not in EXCLUDED_DIRS]
        for name in files:
            info = os.lstat(os.path.join(root, name))
            if stat.S_ISREG(info.st_mode) and (newest is None or info.st_mtime > newest):
                newest = info.st_mtime
    if newest is None:
        newest = directory.stat().st_mtime
    return max(0, int(newest))


def local_epoch(directory: Path, *, revision: str | None) -> int:
    """A local context's time: its commit's when it is a clean git work tree, else its
    newest file's."""
    if revision is not None:
        committed = local_commit_time(directory)
        if committed is not None:
            return committed
    return newest_file_time(directory)


def parse_epoch(output: str, *, what: str) -> int:
    text = output.strip()
    if not text.isdigit():
        raise ConfigurationError(f"git gave no commit time for {what} (got {text[:40]!r})")
    return int(text)
