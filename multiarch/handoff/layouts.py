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


def export_step(paths: PlanPaths, *, image: str, driver: str) -> Step:
    """Copy the built image into an OCI layout, compressing each layer once.

    A store remembers the driver it was made with, so the reference names it explicitly.
    """
    store = f"containers-storage:[{driver}@{paths.storage_root}+{paths.storage_runroot}]"
    digest = ("--digestfile", paths.digest_file) if paths.digest_file else ()
    return Step(
        name="export",
        argv=(
            "skopeo",
            "copy",
            *digest,
            "--dest-compress",
            "--dest-compress-format",
            COMPRESSION,
            f"{store}{image}",
            f"oci:{paths.layout}:{LAYOUT_REF}",
        ),
    )
