"""The layer cache in the registry: one cache repository per architecture, next to the image.

Build nodes start empty (a pod's emptyDir, a fresh local scratch store), so buildah's own
`--layers` cache would never be found again. With `cache: registry` every build reads
and writes its layers at `<registry>/<repository>/cache-<arch>`: buildah 1.28 pushes each
layer it had to build there as an image tagged with its cache key (a hash of the step and
of everything below it), and before running a step looks that tag up. A step whose key
exists is not run: its layer is pulled instead.

One repository per architecture (not one shared one) keeps each node's tag lookups to its
own layers, lets an operator drop one architecture's cache, and keeps QEMU-built layers
apart from native ones of another architecture. The cache lives beside the image because
whoever may push the image may push there too: one set of credentials, one preflight.

Layers are pushed as each step finishes, before the next one starts: a later step that
fails (in the Containerfile, the export or the publish) keeps the cache of every step that
succeeded, so the retry resumes from there. A failed cache push fails the build (buildah
1.28's choice), which the process layer classifies like any other push.

Limit of buildah 1.28: an ARG inside a stage is never looked up in the cache repository,
and after one miss nothing is, so every step below such an ARG runs again
(containers/buildah#4315, fixed in 1.29); preflight says so (`multiarch.cache_checks`).
"""

from __future__ import annotations

from multiarch.platforms import Platform
from multiarch.references import ImageReference
from multiarch.request import BuildRequest

CACHE_PREFIX = "cache-"


def cache_repository(image: ImageReference, platform: Platform) -> ImageReference:
    """`127.0.0.1:5000/examples/hello/cache-arm64` (the variant too: `cache-arm-v7`).

    ARM variants get their own repository: v6 and v7 layers are different binaries.
    """
    arch = platform.architecture + (f"-{platform.variant}" if platform.variant else "")
    return ImageReference(registry=image.registry,
                          repository=f"{image.repository}/{CACHE_PREFIX}{arch}")


def cache_flags(request: BuildRequest, platform: Platform) -> tuple[str, ...]:
    """buildah build options for the request's cache; none for `cache: none`.

    `--tls-verify=false`, already on the build for an insecure registry, covers the cache
    pulls and pushes too (buildah uses one system context for the base image and cache).
    """
    if request.cache != "registry":
        return ()
    repository = cache_repository(request.image, platform).name
    return ("--layers", "--cache-from", repository, "--cache-to", repository)


def cache_repositories(request: BuildRequest) -> list[ImageReference]:
    """Each cache repository the request writes, once (in platform order)."""
    if request.cache != "registry":
        return []
    seen = {cache_repository(request.image, p).name: cache_repository(request.image, p)
            for p in request.platforms}
    return list(seen.values())
