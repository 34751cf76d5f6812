"""What a Containerfile's COPY/ADD steps send from the build context: only those files can
reach the image, so only they are worth a warning (and the rest of the context is not listed).

COPY/ADD sources are matched simply and conservatively: a source covers what its glob
names and everything below; a source this cannot read exactly (an unknown variable, a
pattern it cannot compile) covers the whole context; `--from=` copies and URLs send
nothing from the context.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from multiarch.containerfile import instructions, substitute
from multiarch.ignore_rules import go_clean

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
