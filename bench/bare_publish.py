"""The publish half of B2's bare script: the project's publish, without Prefect."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from multiarch.handoff.layouts import LAYOUT_REF
from multiarch.oci import read_layout_image
from multiarch.platforms import Platform
from multiarch.publish import publish_images
from multiarch.references import ImageReference
from multiarch.results import PlatformImage
from multiarch.source import PinnedSource


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", required=True, help="registry/repository:tag")
    parser.add_argument("--index", required=True, help="where to write the index layout")
    parser.add_argument("layouts", nargs="+", help="PLATFORM=LAYOUT_DIR")
    args = parser.parse_args(argv)
    images = []
    for item in args.layouts:
        platform, layout = item.split("=", 1)
        found = read_layout_image(Path(layout), LAYOUT_REF)
        images.append(PlatformImage(
            platform=Platform.parse(platform), digest=found.manifest_digest,
            size=found.total_size, emulated=False, duration_s=0.0, layout=layout,
            layout_ref=LAYOUT_REF,
        ))
    reference = ImageReference.model_validate(args.image)
    result = publish_images(
        images, image=reference, tags=(reference.tag or "latest",),
        source=PinnedSource(kind="local", location=str(Path.cwd())),
        index_dir=Path(args.index), insecure=True, emit=lambda _line: None,
    )
    print(result.index_digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
