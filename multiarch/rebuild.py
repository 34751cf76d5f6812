"""Rebuild only when something changed: source, Containerfile and build args, or a base.

Every publish records a fingerprint of its inputs as annotations on the index; a run with
`rebuild: if-changed` computes the fingerprint it would publish and compares it with the
one the tag holds, before any build starts. The comparison itself is a pure function, so
the reasons it gives ("base ... moved from ... to ...") are tested as data.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multiarch.containerfile import base_images, final_base
from multiarch.context_hygiene import git_tree
from multiarch.errors import ConfigurationError, MultiarchError, PublishError
from multiarch.ocispec import (
    BASE_DIGEST_ANNOTATION,
    BASE_NAME_ANNOTATION,
    REVISION_LABEL,
    sha256_digest,
)
from multiarch.platforms import Platform
from multiarch.registry import RegistryTarget, fetch_manifest
from multiarch.request import BuildRequest
from multiarch.results import BuildResult, PlatformSummary
from multiarch.source import PinnedSource, git_credentials_block

INPUTS_ANNOTATION = "dev.multiarch.inputs.digest"
BASES_ANNOTATION = "dev.multiarch.bases"
CONTAINERFILE_NAMES = ("Containerfile", "Dockerfile")


@dataclass(frozen=True, kw_only=True)
class Fingerprint:
    """What a build is made of; recorded on the index as annotations."""

    revision: str | None
    inputs_digest: str
    bases: Mapping[str, str | None] = field(default_factory=dict)  # name -> digest
    final_base: str | None = None
    containerfile_digest: str | None = None  # for the provenance; not an annotation
    platforms: tuple[str, ...] = ()  # every platform asked for; the index must hold them all

    def annotations(self) -> dict[str, str]:
        annotations = {INPUTS_ANNOTATION: self.inputs_digest,
                       BASES_ANNOTATION: json.dumps(dict(self.bases), sort_keys=True)}
        if self.revision:
            annotations[REVISION_LABEL] = self.revision
        if self.final_base:
            annotations[BASE_NAME_ANNOTATION] = self.final_base
            digest = self.bases.get(self.final_base)
            if digest:
                annotations[BASE_DIGEST_ANNOTATION] = digest
        return annotations


@dataclass(frozen=True, kw_only=True)
class Decision:
    up_to_date: bool
    reasons: tuple[str, ...]
    index_digest: str | None = None  # what the tag holds now


def decide(*, current: Mapping[str, str] | None, wanted: Fingerprint,
           index_digest: str | None, published: Collection[str] | None = None) -> Decision:
    """Compare the tag's annotations with what this run would publish.

    `published`: the platforms the tag's index holds. An optional platform that failed was
    left out of it under the same fingerprint, so a platform asked for and missing there
    means a rebuild, which retries it (the index says nothing about why it is missing).
    """
    if current is None:
        return Decision(up_to_date=False, reasons=("the tag does not exist yet",))
    reasons = []
    if current.get(INPUTS_ANNOTATION) is None:
        reasons.append("the tag was not published by multiarch-builder (no inputs digest)")
    elif wanted.revision and current.get(REVISION_LABEL) != wanted.revision:
        reasons.append(f"source revision changed: {current.get(REVISION_LABEL)} -> "
                       f"{wanted.revision}")
    elif current.get(INPUTS_ANNOTATION) != wanted.inputs_digest:
        reasons.append("the context, Containerfile, build args, labels, target, platforms "
                       "or index format changed")
    old_bases = json.loads(current.get(BASES_ANNOTATION, "{}") or "{}")
    for name, digest in wanted.bases.items():
        if digest is None:
            reasons.append(f"base {name} could not be resolved, so it may have changed")
        elif old_bases.get(name) != digest:
            reasons.append(f"base {name} moved from {old_bases.get(name) or 'nothing'} to "
                           f"{digest}")
    reasons += [f"{platform} is missing from the published index (an optional platform "
                "left out when it failed): building to retry it"
                for platform in wanted.platforms if published is not None
                and platform not in published]
    if reasons:
        return Decision(up_to_date=False, reasons=tuple(reasons), index_digest=index_digest)
    unchanged = [f"source revision {wanted.revision}" if wanted.revision else
                 "context, Containerfile and build args unchanged"]
    unchanged += [f"base {name} still {digest}" for name, digest in wanted.bases.items()]
    return Decision(up_to_date=True, reasons=tuple(unchanged), index_digest=index_digest)


def inputs_digest(request: BuildRequest, source: PinnedSource, containerfile: str) -> str:
    """Everything besides the bases that decides the image's content, as one digest."""
    content = source.revision or tree_digest(Path(source.location))
    document = {
        "source": content,
        "containerfile": sha256_digest(containerfile.encode()).removeprefix("sha256:"),
        "containerfile_path": request.containerfile,
        "build_args": dict(sorted(request.build_args.items())),
        "labels": dict(sorted(request.labels.items())),
        "target": request.target,
        "platforms": [str(p) for p in request.platforms],
    }
    if request.source_date_epoch is not None:
        # Only when given, so digests recorded before this field existed stay valid. The
        # default epoch follows from the source, which this document already holds.
        document["source_date_epoch"] = request.source_date_epoch
    if request.index_format != "oci":
        # Another format publishes other manifests: switching must rebuild. Only when not
        # the default, so digests recorded before this field existed stay valid.
        document["index_format"] = request.index_format
    return sha256_digest(json.dumps(document, sort_keys=True).encode())


def tree_digest(directory: Path) -> str:
    """A local context's content: paths, executable bits and bytes of every file."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for name in sorted(files):
            path = Path(root) / name
            relative = path.relative_to(directory).as_posix()
            executable = os.access(path, os.X_OK)
            digest.update(f"{relative}\0{int(executable)}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest()
                          if not path.is_symlink() else os.readlink(path).encode())
    return "sha256:" + digest.hexdigest()


def read_containerfile(request: BuildRequest, source: PinnedSource) -> str:
    return containerfile_text(read_containerfile_bytes(request, source), source)


def read_containerfile_bytes(request: BuildRequest, source: PinnedSource) -> bytes:
    """The bytes buildah reads: through a symlink, to the file it resolves to (preflight
    refuses one that leads out of the context, multiarch.context_hygiene)."""
    names = (request.containerfile,) if request.containerfile else CONTAINERFILE_NAMES
    if source.kind == "local":
        for name in names:
            path = Path(source.location) / name
            if path.is_file():
                return path.read_bytes()
        raise ConfigurationError(f"containerfile: none of {', '.join(names)} in the context")
    return _containerfile_from_git(source, names, block=git_credentials_block(request))


def containerfile_text(raw: bytes, source: PinnedSource) -> str:
    """The text as it was always read (the inputs digest is over it and must not move): a
    local file as Python reads text (universal newlines), a git blob as UTF-8."""
    if source.kind == "local":
        return io.TextIOWrapper(io.BytesIO(raw)).read()
    return raw.decode("utf-8", errors="replace")


def _containerfile_from_git(source: PinnedSource, names: tuple[str, ...], *,
                            block: str | None = None) -> bytes:
    """Fetch commits and trees only, then the blobs needed (a blobless clone): a symlink
    in the tree is followed as the build's checkout would follow it."""
    with git_tree(source, block=block) as tree:
        found = tree.containerfile(names)
    if found is None:
        raise ConfigurationError(
            f"containerfile: none of {', '.join(names)} at {source.revision}")
    return found[1]


def base_digest(name: str, *, insecure: bool) -> str | None:
    """The digest a base reference resolves to now (an index for multi-arch bases)."""
    if "@sha256:" in name:
        return name.rsplit("@", 1)[1]
    try:
        raw = fetch_manifest(name, target=RegistryTarget(name=name, insecure=insecure))
    except MultiarchError:
        return None
    return sha256_digest(raw) if raw is not None else None


def fingerprint(request: BuildRequest, source: PinnedSource) -> Fingerprint:
    raw = read_containerfile_bytes(request, source)
    text = containerfile_text(raw, source)
    bases = [name for name in base_images(text, request.build_args)
             if name not in request.build_contexts]  # --build-context NAME: not an image
    return Fingerprint(
        revision=source.revision,
        inputs_digest=inputs_digest(request, source, text),
        bases={name: base_digest(name, insecure=request.insecure_registry) for name in bases},
        final_base=final_base(text, request.build_args, target=request.target),
        containerfile_digest=sha256_digest(raw),  # what buildah reads, links followed
        platforms=tuple(str(p) for p in request.platforms),
    )


def current_index(request: BuildRequest) -> tuple[str, dict[str, Any]] | None:
    """(digest, index) of what the image's first tag holds now, or None."""
    target = RegistryTarget(name=request.image.name, insecure=request.insecure_registry)
    raw = fetch_manifest(request.image.with_tag(request.all_tags[0]), target=target)
    if raw is None:
        return None
    return sha256_digest(raw), json.loads(raw)


def check(request: BuildRequest, source: PinnedSource) -> tuple[Fingerprint, Decision]:
    """The fingerprint this run would publish, and whether the tag already holds it."""
    wanted = fingerprint(request, source)
    current = current_index(request)
    if current is None:
        return wanted, decide(current=None, wanted=wanted, index_digest=None)
    digest, index = current
    return wanted, decide(current=index.get("annotations") or {}, wanted=wanted,
                          index_digest=digest, published=index_platforms(index))


def index_platforms(index: Mapping[str, Any]) -> set[str]:
    """The platforms an index (or a Docker manifest list) holds, in our normal form
    (`linux/arm64`, not `linux/arm64/v8`); entries that name no valid platform are skipped."""
    found = set()
    for entry in index.get("manifests", []):
        try:
            found.add(str(entry_platform(entry)))
        except ValueError:
            continue
    return found


def entry_platform(entry: Mapping[str, Any]) -> Platform:
    """The platform of an index entry; ValueError when it names none we know."""
    platform = entry.get("platform") or {}
    return Platform.parse("/".join(x for x in (platform.get("os"), platform.get("architecture"),
                                               platform.get("variant")) if x))


def published_result(request: BuildRequest, index_digest: str) -> BuildResult:
    """The result of a run that found the tag up to date: what the registry holds."""
    target = RegistryTarget(name=request.image.name, insecure=request.insecure_registry)
    raw = fetch_manifest(request.image.with_digest(index_digest), target=target)
    if raw is None:
        raise PublishError(f"{request.image.with_digest(index_digest)} vanished")
    platforms = []
    for entry in json.loads(raw).get("manifests", []):
        manifest_raw = fetch_manifest(request.image.with_digest(entry["digest"]), target=target)
        manifest = json.loads(manifest_raw or b"{}")
        size = len(manifest_raw or b"") + sum(
            int(blob.get("size", 0)) for blob in [manifest.get("config", {}),
                                                  *manifest.get("layers", [])])
        platforms.append(PlatformSummary(platform=entry_platform(entry), digest=entry["digest"],
                                         size=size, emulated=False, duration_s=0.0))
    return BuildResult(image=request.image.name, index_digest=index_digest,
                       tags=list(request.all_tags), platforms=platforms, up_to_date=True)
