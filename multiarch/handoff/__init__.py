"""How a built platform image reaches publish: the one seam for it.

A handoff decides where a build's export writes, what a `PlatformImage` points to, how
publish reads the platforms back and pushes the index, and what is left to clean up:

- `shared` (default, the seed's design): each build exports an OCI layout to a directory
  every builder and the publisher can see (a local directory, NFS on a cluster); publish
  links the layouts' blobs into an index layout and pushes it all by digest.
- `registry`: each build pushes its platform image by digest to the target repository as
  soon as it is built (in parallel; the registry deduplicates blobs), so no shared volume
  is needed; publish only reads the manifests back and PUTs the index.

Both then write the tags the same way (multiarch.publish). A new handoff is one module
here plus one line in HANDOFFS (the request's `handoff` choices, the CLI's and the
flow's, follow from it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

from multiarch.errors import ConfigurationError

if TYPE_CHECKING:
    from multiarch.oci import LayoutImage
    from multiarch.plan import PlanPaths
    from multiarch.platforms import Platform
    from multiarch.process import Step
    from multiarch.references import ImageReference
    from multiarch.registry_api import RegistryClient
    from multiarch.request import BuildRequest
    from multiarch.results import PlatformImage
    from multiarch.workspace import RunDirs


class Handoff(Protocol):
    name: ClassVar[str]

    def layout_dir(self, dirs: RunDirs, platform: Platform) -> Path:
        """Where the local runner's export writes this platform's OCI layout."""
        ...

    def export_steps(self, request: BuildRequest, paths: PlanPaths, *, image: str
                     ) -> list[Step]:
        """The plan's last steps: from the build store to where publish will find it."""
        ...

    def collect(self, images: Sequence[PlatformImage], *, client: RegistryClient,
                image: ImageReference) -> list[tuple[Platform, LayoutImage]]:
        """Each platform read back and checked against the digest its build reported."""
        ...

    def push_index(self, index: bytes, found: Sequence[tuple[Platform, LayoutImage]], *,
                   client: RegistryClient, image: ImageReference, index_dir: Path,
                   insecure: bool, emit: Callable[[str], None],
                   manifests: Mapping[str, bytes]) -> None:
        """Put the index (and whatever the registry lacks) there by digest, untagged.

        `manifests`: platform manifests publish made (digest -> bytes: the Docker ones of
        `index_format: docker`), pushed before the index that names them. The index's
        own `mediaType` says which kind of index it is."""
        ...

    def cleanup(self, dirs: RunDirs, *, keep: bool) -> None:
        """After any outcome, on the flow's machine."""
        ...


# name -> "module:class" of its implementation, imported on first use
HANDOFFS: dict[str, str] = {
    "shared": "multiarch.handoff.shared:SharedLayouts",
    "registry": "multiarch.handoff.registry:RegistryHandoff",
}


def handoff_named(name: str) -> Handoff:
    try:
        module, _, cls = HANDOFFS[name].partition(":")
    except KeyError:
        raise ConfigurationError(
            f"handoff: {name!r} is unknown: use one of {', '.join(HANDOFFS)}") from None
    handoff: Handoff = getattr(importlib.import_module(module), cls)()
    return handoff
