"""A path resolved through symlinks inside a tree, the way the kernel does, without a
checkout on disk (a commit's tree, read from a blobless clone). buildah follows a
Containerfile's links, so one that leads outside the context would have it read a file from
the machine that builds: this says where a path leads, or which link leads out, before
anything is built; and the refusals for that, shared with local contexts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from multiarch.errors import ConfigurationError

MAX_LINKS = 40  # symlinks followed in one path before it counts as a loop (Linux: 40)


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
