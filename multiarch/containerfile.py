"""Which base images a Containerfile builds FROM, without building it.

Scheduled rebuilds exist to pick up fixed base images; to know whether a base moved, we
must know the bases. This reads FROM lines the way buildah does for that purpose: line
continuations, global ARGs (before the first FROM) with build-arg overrides, `--platform`
flags, stage aliases (`FROM builder` is not a base) and `scratch` (no base at all).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# An ARG name (and so a build arg's): what buildah accepts after `ARG`.
BUILD_ARG_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_ARG_REF = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}"
                      r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True, kw_only=True)
class Stage:
    base: str  # what FROM names, after ARG substitution
    alias: str | None


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuations joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    if pending.strip():
        keyword, _, rest = pending.strip().partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def substitute(value: str, variables: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        if name in variables and variables[name] != "":
            return variables[name]
        return match.group("default") or ""

    return _ARG_REF.sub(replace, value)


def stages(text: str, build_args: Mapping[str, str]) -> list[Stage]:
    """Every FROM, with global ARGs (and their build-arg overrides) substituted."""
    global_args: dict[str, str] = {}
    found: list[Stage] = []
    for keyword, rest in instructions(text):
        if keyword == "ARG" and not found:
            name, _, default = rest.partition("=")
            name = name.strip()
            global_args[name] = build_args.get(name, default.strip().strip("\"'"))
        elif keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            if not words:
                continue
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            found.append(Stage(base=substitute(words[0], global_args), alias=alias))
    return found


def base_images(text: str, build_args: Mapping[str, str]) -> list[str]:
    """External images the build pulls, in order, without repeats."""
    aliases: set[str] = set()
    bases: list[str] = []
    for stage in stages(text, build_args):
        name = stage.base
        if name.lower() != "scratch" and name.lower() not in aliases and name not in bases:
            bases.append(name)
        if stage.alias:
            aliases.add(stage.alias.lower())
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
