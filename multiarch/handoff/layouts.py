"""Export: the built image out of the build store into an OCI layout, compressed once.

Both handoffs start here; they differ in where the layout lives (a shared directory, or
the build's own scratch space before a push by digest).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from multiarch.process import Step

if TYPE_CHECKING:
    from multiarch.plan import PlanPaths

LAYOUT_REF = "image"  # the ref name of the one image in each per-platform OCI layout
COMPRESSION = "gzip"  # what every runtime and registry accepts; compressed once, at export


def export_step(paths: PlanPaths, *, image: str, driver: str, image_format: str = "oci"
                ) -> Step:
    """Copy the built image into an OCI layout, compressing each layer once.

    A store remembers the driver it was made with, so the reference names it explicitly.
    A docker-format image stays one (`--format v2s2`): an OCI layout may hold a Docker
    schema 2 manifest, and converting it to OCI would rewrite its config without
    HEALTHCHECK, ONBUILD and SHELL, which only Docker's config has.
    """
    store = f"containers-storage:[{driver}@{paths.storage_root}+{paths.storage_runroot}]"
    digest = ("--digestfile", paths.digest_file) if paths.digest_file else ()
    keep_docker = ("--format", "v2s2") if image_format == "docker" else ()
    return Step(
        name="export",
        argv=(
            "skopeo",
            "copy",
            *digest,
            *keep_docker,
            "--dest-compress",
            "--dest-compress-format",
            COMPRESSION,
            f"{store}{image}",
            f"oci:{paths.layout}:{LAYOUT_REF}",
        ),
    )
