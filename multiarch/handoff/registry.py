"""The registry handoff: each build pushes its platform image by digest; no shared volume.

Right after export, the build pushes its layout to the target repository by digest,
untagged: nothing a user pulls changes, the platforms push in parallel from their own
nodes, and the registry deduplicates blobs the platforms share. Publish then moves
manifest bytes only: it reads each platform's manifest (and config, to check the
platform) back by digest, and PUTs the index by digest before the tags are written.

An untagged platform manifest whose run fails stays in the repository until the
registry's garbage collection, like any untagged manifest; it is never reachable by tag.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from multiarch.errors import PublishError
from multiarch.handoff.layouts import LAYOUT_REF, export_step
from multiarch.oci import LayoutImage, platform_image
from multiarch.ocispec import IMAGE_MANIFEST_TYPES, MEDIA_TYPE_INDEX, sha256_digest
from multiarch.process import Step
from multiarch.registry import RETRY_TIMES
from multiarch.registry_api import put_manifest, read_blob, read_manifest, retrying

if TYPE_CHECKING:
    from multiarch.plan import PlanPaths
    from multiarch.platforms import Platform
    from multiarch.references import ImageReference
    from multiarch.registry_api import RegistryClient
    from multiarch.request import BuildRequest
    from multiarch.results import PlatformImage
    from multiarch.workspace import RunDirs

# The digest is known only once export has written it, so the push reads it from the
# digest file. A fixed script: every value arrives as "$1".."$3", skopeo's options as "$@".
PUSH_SCRIPT = (
    'source=$1 repository=$2 digest_file=$3; shift 3; '
    'exec skopeo copy "$@" "$source" "docker://$repository@$(cat -- "$digest_file")"'
)


# A docker-format image (image_format: docker) is a Docker schema 2 manifest in the layout,
# which skopeo writes there but will not read back ("unsupported manifest MIME types",
# skopeo 1.9 and 1.18 alike). So it is pushed from a `dir:` copy made of hard links to the
# layout's blobs, with the manifest as manifest.json: no image byte is copied. Fixed script.
PUSH_DOCKER_SCRIPT = (
    'layout=$1 repository=$2 digest_file=$3 dir=$4; shift 4; '
    'digest=$(cat -- "$digest_file") && rm -rf -- "$dir" && mkdir -p -- "$dir" && '
    'ln -f -- "$layout"/blobs/sha256/* "$dir"/ && '
    'ln -f -- "$layout/blobs/sha256/${digest#sha256:}" "$dir/manifest.json" && '
    "printf 'Directory Transport Version: 1.1\\n' > \"$dir/version\" && "
    'exec skopeo copy "$@" "dir:$dir" "docker://$repository@$digest"'
)


class RegistryHandoff:
    name: ClassVar[str] = "registry"

    def layout_dir(self, dirs: RunDirs, platform: Platform) -> Path:
        return dirs.scratch(platform) / "layout"

    def export_steps(self, request: BuildRequest, paths: PlanPaths, *, image: str
                     ) -> list[Step]:
        if paths.digest_file is None:
            raise ValueError("the registry handoff needs a digest file in the plan's paths")
        tls = ["--dest-tls-verify=false"] if request.insecure_registry else []
        report = ["--digestfile", paths.report_file] if paths.report_file else []
        options = ("--preserve-digests", "--retry-times", RETRY_TIMES, *tls, *report)
        if request.image_format == "docker":
            push = Step(name="push", argv=(
                "sh", "-c", PUSH_DOCKER_SCRIPT, "push", paths.layout, request.image.name,
                paths.digest_file, f"{paths.layout}.dir", *options))
        else:
            push = Step(name="push", argv=(
                "sh", "-c", PUSH_SCRIPT, "push", f"oci:{paths.layout}:{LAYOUT_REF}",
                request.image.name, paths.digest_file, *options))
        return [export_step(paths, image=image, driver=request.runner.storage_driver,
                            image_format=request.image_format), push]

    def collect(self, images: Sequence[PlatformImage], *, client: RegistryClient,
                image: ImageReference) -> list[tuple[Platform, LayoutImage]]:
        return [(built.platform, pushed_image(client, image, built)) for built in images]

    def push_index(self, index: bytes, found: Sequence[tuple[Platform, LayoutImage]], *,
                   client: RegistryClient, image: ImageReference, index_dir: Path,
                   insecure: bool, emit: Callable[[str], None],
                   manifests: Mapping[str, bytes]) -> None:
        """The blobs are there already (each build pushed them): only manifests go up.

        With `index_format: docker` the Docker manifests go up next to the OCI ones the
        builds pushed, which stay untagged until the registry's garbage collection."""
        for made, body in manifests.items():
            media_type = json.loads(body)["mediaType"]
            emit(f"[publish] {media_type} -> {image.with_digest(made)}")
            retrying(lambda made=made, body=body, media_type=media_type: put_manifest(
                client, image.repository, made, body=body, media_type=media_type))
        digest = sha256_digest(index)
        emit(f"[publish] index of {len(found)} pushed platforms -> {image.with_digest(digest)}")
        index_type = json.loads(index).get("mediaType", MEDIA_TYPE_INDEX)
        retrying(lambda: put_manifest(client, image.repository, digest, body=index,
                                      media_type=index_type))

    def cleanup(self, dirs: RunDirs, *, keep: bool) -> None:
        """Nothing on the flow's machine: the layouts lived in the builds' scratch space."""


def pushed_image(client: RegistryClient, image: ImageReference,
                 built: PlatformImage) -> LayoutImage:
    """A platform's manifest and config as the registry holds them, by the build's digest."""
    where = image.with_digest(built.digest)
    manifest = retrying(lambda: read_manifest(client, image.repository, built.digest))
    if manifest is None:
        raise PublishError(f"{built.platform}: {where} is not in the registry: its build's "
                           "push did not complete; run the build again")
    if manifest.media_type not in IMAGE_MANIFEST_TYPES:
        raise PublishError(f"{built.platform}: {where} is a {manifest.media_type}, not an image")
    body = json.loads(manifest.body)
    config = json.loads(retrying(lambda: read_blob(client, image.repository,
                                                   body["config"]["digest"])))
    return platform_image(body, config, layout=None, digest=built.digest,
                          size=len(manifest.body), media_type=manifest.media_type)
