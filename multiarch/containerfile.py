"""Which images a Containerfile builds from, without building it.

Scheduled rebuilds exist to pick up fixed base images; to know whether a base moved, we
must know the bases. This reads the Containerfile the way buildah does for that purpose:
line continuations, heredoc bodies (`RUN <<EOF` ... `EOF`: not instructions), global ARGs
(before the first FROM) with build-arg overrides, `--platform` flags, stage aliases
(`FROM builder` is not a base) and `scratch` (no base at all). An image is a base wherever
it is named: `FROM`, `COPY --from=IMAGE` and `RUN --mount=...,from=IMAGE` (a stage name
or number there is not one).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# An ARG name (and so a build arg's): what buildah accepts after `ARG`.
BUILD_ARG_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# `<<EOF`, `<<-EOF`, `<<"EOF"`, `<<'EOF'`: the body runs until a line that is the word
_HEREDOC = re.compile(r"<<-?([\"']?)([A-Za-z_][A-Za-z0-9_]*)\1")
_ARG_REF = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}"
                      r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True, kw_only=True)
class Stage:
    base: str  # what FROM names, after ARG substitution
    alias: str | None
    platform: str | None = None  # FROM --platform=VALUE as written (`$BUILDPLATFORM`)
    line: int = 0  # the FROM's line number


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuations joined, comments dropped."""
    return [(keyword, rest) for _, keyword, rest in numbered_instructions(text)]


def numbered_instructions(text: str) -> list[tuple[int, str, str]]:
    """(first line number, INSTRUCTION, arguments): continuations joined, comments and
    heredoc bodies dropped."""
    result: list[tuple[int, str, str]] = []
    pending, first = "", 0
    heredoc_ends: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if heredoc_ends:
            if line == heredoc_ends[0]:
                heredoc_ends.pop(0)
            continue
        if not pending and (not line or line.startswith("#")):
            continue
        first = first or number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        result.append((first, keyword.upper(), rest.strip()))
        pending, first = "", 0
        if keyword.upper() in ("RUN", "COPY", "ADD"):
            heredoc_ends = [m.group(2) for m in _HEREDOC.finditer(rest)]
    if pending.strip():
        keyword, _, rest = pending.strip().partition(" ")
        result.append((first, keyword.upper(), rest.strip()))
    return result


def substitute(value: str, variables: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        if name in variables and variables[name] != "":
            return variables[name]
        return match.group("default") or ""

    return _ARG_REF.sub(replace, value)


def _global_arg(rest: str, build_args: Mapping[str, str]) -> tuple[str, str]:
    """`ARG NAME=default` before the first FROM: its value, a build arg winning."""
    name, _, default = rest.partition("=")
    return name.strip(), build_args.get(name.strip(), default.strip().strip("\"'"))


def stages(text: str, build_args: Mapping[str, str]) -> list[Stage]:
    """Every FROM, with global ARGs (and their build-arg overrides) substituted."""
    global_args: dict[str, str] = {}
    found: list[Stage] = []
    for number, keyword, rest in numbered_instructions(text):
        if keyword == "ARG" and not found:
            global_args.update([_global_arg(rest, build_args)])
        elif keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            if not words:
                continue
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            platform = next((value for name, value in _flag_values(rest)
                             if name == "platform" and value), None)
            found.append(Stage(base=substitute(words[0], global_args), alias=alias,
                               platform=platform, line=number))
    return found


def _flag_values(rest: str) -> list[tuple[str, str]]:
    """The leading `--name=value` flags of an instruction's arguments."""
    flags = []
    for word in rest.split():
        if not word.startswith("--"):
            break
        name, _, value = word[2:].partition("=")
        flags.append((name.lower(), value))
    return flags


def _named_images(keyword: str, rest: str) -> list[str]:
    """What `COPY --from=` or a `RUN --mount=...,from=` names (an image or a stage)."""
    flags = _flag_values(rest)
    if keyword in ("COPY", "ADD"):
        return [value for name, value in flags if name == "from" and value]
    if keyword != "RUN":
        return []
    named = []
    for name, value in flags:
        if name == "mount":
            fields = dict(part.partition("=")[::2] for part in value.split(","))
            if fields.get("from"):
                named.append(fields["from"])
    return named


def base_images(text: str, build_args: Mapping[str, str]) -> list[str]:
    """External images the build pulls (FROM, COPY --from, RUN --mount from), in order,
    without repeats."""
    global_args: dict[str, str] = {}
    aliases: set[str] = set()
    stage_count = 0
    bases: list[str] = []

    def add(name: str) -> None:
        if (name and name.lower() != "scratch" and name.lower() not in aliases
                and not name.isdigit() and name not in bases):
            bases.append(name)

    for keyword, rest in instructions(text):
        if keyword == "ARG" and not stage_count:
            global_args.update([_global_arg(rest, build_args)])
        elif keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            if not words:
                continue
            stage_count += 1
            add(substitute(words[0], global_args))
            if len(words) >= 3 and words[1].upper() == "AS":
                aliases.add(words[2].lower())
        else:
            for named in _named_images(keyword, rest):
                add(substitute(named, {**global_args, **build_args}))
    return bases


def final_base(text: str, build_args: Mapping[str, str], *, target: str | None = None
               ) -> str | None:
    """The external image the published stage descends from (None for scratch)."""
    all_stages = stages(text, build_args)
    by_alias = {s.alias.lower(): s for s in all_stages if s.alias}
    stage = by_alias.get(target.lower()) if target else (all_stages[-1] if all_stages else None)
    seen: set[str] = set()
    while stage is not None and stage.base.lower() in by_alias and stage.base.lower() not in seen:
        seen.add(stage.base.lower())
        stage = by_alias[stage.base.lower()]
    if stage is None or stage.base.lower() == "scratch":
        return None
    return stage.base
