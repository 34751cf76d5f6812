"""The fleet's catalog (`images.yaml`): one entry per image, validated as a BuildRequest.

A team runs tens of images, several built FROM each other. The catalog lists them once;
each entry is the catalog's `defaults` merged with the entry and validated by
`BuildRequest` itself, so an entry accepts exactly what `multiarch build` accepts and a
mistake reads the same, prefixed with where it is: `images.yaml: images[2] (app-b):
platforms.0: ...`. Everything here is checked before any build starts.

Fleets rebuild on a schedule, so an entry's `rebuild` defaults to `if-changed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from multiarch.errors import ConfigurationError
from multiarch.references import DEFAULT_TAG, parse_reference_fields
from multiarch.request import BuildRequest, describe_validation_error, is_git_url

TOP_LEVEL_KEYS = ("defaults", "images")
FLEET_REBUILD_DEFAULT = "if-changed"


class CatalogError(ConfigurationError):
    """The catalog cannot be used as written; the message names the entry and the field."""


class CatalogEntry(BaseModel):
    """One image of the fleet: its table name, its request, and the flow parameters
    (defaults merged with the entry, relative context resolved) its subflow receives."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    request: BuildRequest
    parameters: dict[str, Any]

    @property
    def published(self) -> set[tuple[str, str, str]]:
        """(registry, repository, tag) of every tag this entry publishes."""
        image = self.request.image
        return {(image.registry, image.repository, tag) for tag in self.request.all_tags}


class Catalog(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    entries: tuple[CatalogEntry, ...]

    @property
    def stem(self) -> str:
        return Path(self.path).stem

    def entry(self, name: str) -> CatalogEntry:
        return next(e for e in self.entries if e.name == name)


def load_catalog(path: str | Path) -> Catalog:
    """Read and validate the catalog file; CatalogError names what is wrong and where."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"catalog {path}: cannot be read ({exc.strerror}): give the path "
                           "of an images.yaml (relative to the working directory)") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{file.name}: not valid YAML: {' '.join(str(exc).split())}") from None
    return parse_catalog(document, name=file.name, base_dir=file.resolve().parent,
                         path=str(path))


def parse_catalog(document: Any, *, name: str, base_dir: Path, path: str | None = None
                  ) -> Catalog:
    """Validate a loaded catalog document. Pure apart from the context checks that
    BuildRequest itself makes (a local context must exist)."""
    if not isinstance(document, Mapping):
        raise CatalogError(f"{name}: expected a mapping with `images:` (and optional "
                           "`defaults:`) at the top level")
    unknown = sorted(set(document) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise CatalogError(f"{name}: unknown top-level key(s) {', '.join(map(str, unknown))}: "
                           f"only {' and '.join(TOP_LEVEL_KEYS)} are allowed")
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise CatalogError(f"{name}: defaults: must be a mapping of BuildRequest fields")
    if "image" in defaults or "name" in defaults:
        raise CatalogError(f"{name}: defaults: `image` and `name` belong to each entry, not "
                           "to defaults")
    images = document.get("images")
    if not isinstance(images, list) or not images:
        raise CatalogError(f"{name}: images: must be a non-empty list of entries")
    entries = [_entry(raw, index=i, catalog=name, defaults=defaults, base_dir=base_dir)
               for i, raw in enumerate(images)]
    _refuse_duplicates(entries, catalog=name)
    return Catalog(path=path or name, entries=tuple(entries))


def _entry(raw: Any, *, index: int, catalog: str, defaults: Mapping[str, Any],
           base_dir: Path) -> CatalogEntry:
    where = f"{catalog}: images[{index}]"
    if not isinstance(raw, Mapping):
        raise CatalogError(f"{where}: must be a mapping with at least `image` and `context`")
    fields = dict(raw)
    entry_name = fields.pop("name", None)
    if entry_name is not None and (not isinstance(entry_name, str) or not entry_name.strip()):
        raise CatalogError(f"{where}: name: must be a non-empty string")
    label = entry_name or _default_name(fields.get("image"))
    if label:
        where += f" ({label})"
    merged = deep_merge({"rebuild": FLEET_REBUILD_DEFAULT, **defaults}, fields)
    if isinstance(merged.get("context"), str):
        merged["context"] = resolve_context(merged["context"], base_dir)
    try:
        request = BuildRequest(**merged)
    except ValidationError as exc:
        raise CatalogError(f"{where}: {describe_validation_error(exc)}") from None
    except TypeError as exc:  # a non-string key in the YAML
        raise CatalogError(f"{where}: {exc}") from None
    return CatalogEntry(name=label or request.image.repository.rsplit("/", 1)[-1],
                        request=request, parameters=merged)


def _default_name(image: Any) -> str | None:
    """The repository's last component: `127.0.0.1:5000/fleet/app-a:latest` -> `app-a`."""
    if not isinstance(image, str):
        return None
    try:
        return parse_reference_fields(image)["repository"].rsplit("/", 1)[-1]  # type: ignore[union-attr]
    except ValueError:
        return None


def resolve_context(context: str, base_dir: Path) -> str:
    """A relative local context is relative to the catalog file, not to the cwd."""
    if is_git_url(context) or Path(context).is_absolute():
        return context
    return str((base_dir / context).resolve())


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` wins; nested mappings (build_args, runner, labels) merge key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _refuse_duplicates(entries: list[CatalogEntry], *, catalog: str) -> None:
    names: dict[str, int] = {}
    tags: dict[tuple[str, str, str], int] = {}
    for index, entry in enumerate(entries):
        if entry.name in names:
            raise CatalogError(
                f"{catalog}: images[{index}] ({entry.name}): name: already used by "
                f"images[{names[entry.name]}]: give each entry its own `name`")
        names[entry.name] = index
        for key in sorted(entry.published):
            if key in tags:
                other = entries[tags[key]]
                raise CatalogError(
                    f"{catalog}: images[{index}] ({entry.name}): image: {key[0]}/{key[1]}:"
                    f"{key[2]} is also published by images[{tags[key]}] ({other.name}): one "
                    "entry per repository and tag")
            tags[key] = index


# --- dependencies ------------------------------------------------------------------------

def base_key(reference: str) -> tuple[str, str, str] | None:
    """(registry, repository, tag) a FROM names, or None for what no catalog entry can
    publish (no registry host, a digest, an unparsable name)."""
    if "@" in reference:
        return None
    try:
        fields = parse_reference_fields(reference)
    except ValueError:
        return None
    return (str(fields["registry"]), str(fields["repository"]), fields["tag"] or DEFAULT_TAG)


def dependencies(catalog: Catalog, bases: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """Entry name -> the catalog entries it is built FROM (in catalog order).

    `bases` is each entry's external bases (multiarch.containerfile.base_images of its
    Containerfile with its build args): an entry depends on another when a base names one
    of the other's tags in the same registry and repository.
    """
    publisher = {key: entry.name for entry in catalog.entries for key in entry.published}
    order = {entry.name: i for i, entry in enumerate(catalog.entries)}
    result: dict[str, list[str]] = {}
    for entry in catalog.entries:
        found = {publisher[key] for base in bases.get(entry.name, [])
                 if (key := base_key(base)) is not None and key in publisher}
        result[entry.name] = sorted(found, key=order.__getitem__)
    return result


def find_cycle(graph: Mapping[str, list[str]]) -> list[str] | None:
    """A cycle as a path that returns to its start (`[a, b, a]`), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if state.get(nxt) is None and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if state.get(node) is None and (cycle := visit(node)) is not None:
            return cycle
    return None


def build_order(graph: Mapping[str, list[str]]) -> list[str]:
    """Every entry after the entries it is built FROM; ties keep catalog order.
    Raises CatalogError naming a cycle: `catalog cycle: a -> b -> a`."""
    cycle = find_cycle(graph)
    if cycle is not None:
        raise CatalogError(f"catalog cycle: {' -> '.join(cycle)}: an image cannot be built "
                           "FROM itself, even through others")
    done: list[str] = []
    remaining = list(graph)
    while remaining:
        ready = next(n for n in remaining if all(d in done for d in graph[n]))
        done.append(ready)
        remaining.remove(ready)
    return done


def dependents_of(catalog: Catalog, graph: Mapping[str, list[str]],
                  bases: Mapping[str, list[str]], published: str) -> list[str]:
    """The entries to rebuild after `published` (a repository `registry/repo` or an image
    `registry/repo:tag`) moved: those built FROM it, and transitively those built FROM
    them. The published image itself is not included: it was just published."""
    target = _published_key(published)
    direct = [entry.name for entry in catalog.entries
              if any(_matches(base_key(base), target) for base in bases.get(entry.name, []))]
    selected = set(direct)
    changed = True
    while changed:
        changed = False
        for name, deps in graph.items():
            if name not in selected and selected.intersection(deps):
                selected.add(name)
                changed = True
    return [entry.name for entry in catalog.entries if entry.name in selected]


def _published_key(published: str) -> tuple[str, str, str | None]:
    text = published.strip()
    if "@" in text:
        text = text.split("@", 1)[0]
    try:
        fields = parse_reference_fields(text)
    except ValueError as exc:
        raise CatalogError(f"only_dependents_of: {exc}") from None
    return (str(fields["registry"]), str(fields["repository"]), fields["tag"])


def _matches(base: tuple[str, str, str] | None, target: tuple[str, str, str | None]) -> bool:
    if base is None:
        return False
    return base[:2] == target[:2] and (target[2] is None or base[2] == target[2])
