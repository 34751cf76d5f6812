"""Label and field selectors as the API server parses them, so list and watch filter for real.

kmock 0.8 ignores `labelSelector` and `fieldSelector`; a runner that watches
`job-name=X` would then see every pod in the namespace and could pass a test that a real
cluster fails. The grammar follows k8s.io/apimachinery/pkg/labels (equality and set-based
requirements) and pkg/fields (`a.b=c`, `a.b==c`, `a.b!=c`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Predicate = Callable[[Mapping[str, Any]], bool]


class SelectorError(ValueError):
    """A selector the real API server would reject with 400 BadRequest."""


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        match self.operator:
            case "=" | "in":
                return present and value in self.values
            case "!=" | "notin":
                return not present or value not in self.values
            case "exists":
                return present
            case _:
                return not present


_SET_RE = re.compile(r"^\s*([^\s!=()]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_RE = re.compile(r"^\s*([^\s!=()]+)\s*(==|=|!=)\s*([^\s,()]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([^\s!=()]+)\s*$")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside `in (...)` value lists."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part.strip()]


def parse_label_selector(text: str | None) -> list[Requirement]:
    requirements: list[Requirement] = []
    for part in _split_top_level(text or ""):
        if found := _SET_RE.match(part):
            values = frozenset(v.strip() for v in found.group(3).split(",") if v.strip())
            requirements.append(Requirement(found.group(1), found.group(2), values))
        elif found := _EQ_RE.match(part):
            operator = "!=" if found.group(2) == "!=" else "="
            requirements.append(Requirement(found.group(1), operator, frozenset({found.group(3)})))
        elif found := _EXISTS_RE.match(part):
            operator = "!" if found.group(1) else "exists"
            requirements.append(Requirement(found.group(2), operator))
        else:
            raise SelectorError(f"unable to parse requirement: {part.strip()!r}")
    return requirements


def label_predicate(text: str | None) -> Predicate:
    requirements = parse_label_selector(text)

    def matches(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(requirement.matches(labels) for requirement in requirements)

    return matches


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string form of a dotted field; absent fields compare as the empty string."""
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def field_predicate(text: str | None) -> Predicate:
    terms: list[tuple[str, bool, str]] = []
    for part in _split_top_level(text or ""):
        found = _EQ_RE.match(part)
        if not found:
            raise SelectorError(f"invalid selector: {part.strip()!r}; can't understand it")
        terms.append((found.group(1), found.group(2) != "!=", found.group(3)))

    def matches(obj: Mapping[str, Any]) -> bool:
        return all((field_value(obj, path) == want) == equal for path, equal, want in terms)

    return matches
