"""Ignore files as buildah 1.28.2 reads them: the hygiene check must leave out exactly what
the build leaves out (more, and a leak goes unnoticed; less, and the warning names files that
are never sent).

Ignore files follow buildah 1.28.2 exactly (read from its source, `pkg/parse.
ContainerIgnoreFile`, imagebuilder's `ParseIgnore`, containers/storage's `fileutils.
PatternMatcher`): `<Containerfile>.containerignore` or `<Containerfile>.dockerignore` next to
the Containerfile (the latter wins when both exist), else `.containerignore`, else
`.dockerignore` at the context's root; `#` comments in column 1; `!` exceptions; the last
matching pattern wins; a pattern that matches a directory matches everything under it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass


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
