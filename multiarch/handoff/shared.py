"""The shared handoff: OCI layouts on a directory every builder and the publisher see.

The seed's design (NFS on a cluster, a local directory on one machine). Publish checks
each layout against the digest its build reported, hard-links the blobs into an index
layout (no copy of image data) and pushes that by digest with skopeo.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from multiarch.dockerformat import write_manifest_list_dir
from multiarch.errors import PublishError
from multiarch.handoff.layouts import export_step
from multiarch.oci import LayoutImage, read_layout_image, write_index_layout
from multiarch.ocispec import DOCKER_MANIFEST_LIST
from multiarch.registry import RegistryTarget, push_all
from multiarch.runclaim import remove_tree

if TYPE_CHECKING:
    from multiarch.plan import PlanPaths
    from multiarch.platforms import Platform
    from multiarch.process import Step
    from multiarch.references import ImageReference
    from multiarch.registry_api import RegistryClient
    from multiarch.request import BuildRequest
    from multiarch.results import PlatformImage
    from multiarch.workspace import RunDirs

INDEX_REF = "index"


class SharedLayouts:
    name: ClassVar[str] = "shared"

    def layout_dir(self, dirs: RunDirs, platform: Platform) -> Path:
        return dirs.run_shared / platform.slug

    def export_steps(self, request: BuildRequest, paths: PlanPaths, *, image: str
                     ) -> list[Step]:
        return [export_step(paths, image=image, driver=request.runner.storage_driver,
                            image_format=request.image_format)]

    def collect(self, images: Sequence[PlatformImage], *, client: RegistryClient,
                image: ImageReference) -> list[tuple[Platform, LayoutImage]]:
        return [(built.platform, checked_layout_image(built)) for built in images]

    def push_index(self, index: bytes, found: Sequence[tuple[Platform, LayoutImage]], *,
                   client: RegistryClient, image: ImageReference, index_dir: Path,
                   insecure: bool, emit: Callable[[str], None],
                   manifests: Mapping[str, bytes]) -> None:
        images = [img for _, img in found]
        if json.loads(index).get("mediaType") == DOCKER_MANIFEST_LIST:
            digest = write_manifest_list_dir(index_dir, index, images, manifests=manifests)
            source = f"dir:{index_dir}"
        else:
            digest = write_index_layout(index_dir, index, images, ref_name=INDEX_REF)
            source = f"oci:{index_dir}:{INDEX_REF}"
        emit(f"[publish] pushing {len(found)} platforms to {image.with_digest(digest)}")
        push_all(source, destination=image.with_digest(digest),
                 target=RegistryTarget(name=image.name, insecure=insecure),
                 emit=lambda line: emit(f"[publish] {line}"), label="[publish]")

    def cleanup(self, dirs: RunDirs, *, keep: bool) -> None:
        if not keep:
            remove_tree(dirs.run_shared)


def checked_layout_image(built: PlatformImage) -> LayoutImage:
    if built.layout is None:
        raise PublishError(f"{built.platform} was handed over by {built.handoff}, not as a "
                           "layout: publish it with the handoff it was built with")
    layout_image = read_layout_image(Path(built.layout), built.layout_ref)
    if layout_image.manifest_digest != built.digest:
        raise PublishError(
            f"layout of {built.platform} changed since its build "
            f"({layout_image.manifest_digest} != {built.digest})"
        )
    return layout_image
