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
from pathlib import Path

from multiarch.errors import ConfigurationError, MultiarchError
from multiarch.process import capture

LOCAL_GIT_TIMEOUT_S = 30
EXCLUDED_DIRS = frozenset({".git"})


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
