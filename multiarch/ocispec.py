"""The OCI names this project speaks, in one place: media types, annotation keys, digests.

From the image-spec (media-types.md, annotations.md, image-layout.md) and Docker's
distribution manifests, which registries may still serve for base images.
"""

from __future__ import annotations

import hashlib

MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
# layers and configs: what index_format docker (multiarch.dockerformat) converts between
MEDIA_TYPE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_NONDISTRIBUTABLE_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
IMAGE_MANIFEST_TYPES = frozenset({MEDIA_TYPE_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({MEDIA_TYPE_INDEX, DOCKER_MANIFEST_LIST})

# annotations.md (also used as image labels: buildah writes labels into the config)
CREATED_ANNOTATION = "org.opencontainers.image.created"
SOURCE_LABEL = "org.opencontainers.image.source"
REVISION_LABEL = "org.opencontainers.image.revision"
BASE_NAME_ANNOTATION = "org.opencontainers.image.base.name"
BASE_DIGEST_ANNOTATION = "org.opencontainers.image.base.digest"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

# image-spec v1.1 manifest.md, "Guidance for an Empty Descriptor": the `{}` blob that an
# artifact manifest names as its config when the artifact has none; its `artifactType`
# then says what the artifact is.
MEDIA_TYPE_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
EMPTY_DATA = "e30="  # base64 of EMPTY_JSON, embedded in the descriptor

# distribution-spec v1.1: a registry with the referrers API answers a manifest PUT that has
# a `subject` with this header; without it the client keeps the referrers tag itself.
OCI_SUBJECT_HEADER = "OCI-Subject"

# image-layout.md: "The oci-layout file ... imageLayoutVersion"
LAYOUT_FILE_CONTENT = '{"imageLayoutVersion":"1.0.0"}'


def sha256_digest(data: bytes) -> str:
    """The OCI digest of some bytes: `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()
