"""B1: handoff and publish, the project's way against the original pipeline (seed.md).

Each size is built once per platform (the benchmark measures export + publish, not the
build). Per run, alternating which goes first:

- original: `skopeo copy containers-storage:... oci-archive:SHARED/container-ARCH.tar` per
  platform; merge step with fresh container storage: `skopeo copy oci-archive:...
  containers-storage:...`, `buildah manifest create`, `manifest add` per image,
  `buildah manifest push --all`.
- ours: `multiarch.handoff.layouts.export_step` (gzip once, into an `oci:` layout) per
  platform, then
  `multiarch.publish.publish_images` (push by digest, tags, verify).

Every run pushes to a registry of its own, so registry bytes are that run's storage growth.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import (
    LOG,
    Settings,
    Store,
    buildah_build,
    dir_bytes,
    fresh_registry,
    run,
    summary,
)
from multiarch.handoff.layouts import LAYOUT_REF, export_step
from multiarch.oci import read_layout_image
from multiarch.plan import PlanPaths
from multiarch.platforms import Platform
from multiarch.publish import publish_images
from multiarch.references import ImageReference
from multiarch.results import PlatformImage
from multiarch.source import PinnedSource

ARCHES = ("amd64", "arm64")
CONTAINERFILE = """\
ARG BASE
FROM $BASE
COPY random/ /data/random/
COPY text/ /data/text/
"""
_CHUNK = 4 * 2**20


def make_context(dest: Path, *, size_mb: int, random_fraction: float) -> Path:
    """A context of `size_mb` MiB: random bytes (incompressible, like binaries and media)
    and log-like text (compressible several times), written by this process, not by RUN."""
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "random").mkdir(parents=True)
    (dest / "text").mkdir()
    total = size_mb * 2**20
    random_bytes = int(total * random_fraction)
    _write_files(dest / "random", "blob", random_bytes, lambda n, _: os.urandom(n))
    _write_files(dest / "text", "log", total - random_bytes, _text_chunk)
    (dest / "Containerfile").write_text(CONTAINERFILE)
    return dest


def _write_files(directory: Path, stem: str, size: int, chunk: Callable[[int, int], bytes]) -> None:
    file_size = 32 * 2**20
    index = 0
    while size > 0:
        this = min(size, file_size)
        with (directory / f"{stem}-{index:03d}").open("wb") as handle:
            left = this
            offset = 0
            while left > 0:
                n = min(left, _CHUNK)
                handle.write(chunk(n, index * file_size + offset))
                left -= n
                offset += n
        size -= this
        index += 1


def _text_chunk(n: int, start: int) -> bytes:
    lines = []
    length = 0
    i = start // 96
    while length < n:
        line = (
            f"2026-11-28T05:{i // 60 % 60:02d}:{i % 60:02d}Z INFO GET /api/v1/items/{i % 977} "
            f"status=200 bytes={i * 7919 % 65536} user=u{i % 131}\n"
        )
        lines.append(line)
        length += len(line)
        i += 1
    return "".join(lines).encode()[:n]


def build_images(settings: Settings, *, base: str, size_mb: int, root: Path) -> dict[str, Store]:
    context = make_context(
        root / "context", size_mb=size_mb, random_fraction=settings.random_fraction
    )
    stores = {}
    for arch in ARCHES:
        store = Store(root=root / f"store-{arch}")
        store.remove()
        seconds = buildah_build(
            store, context=context, platform_text=f"linux/{arch}", tag=image_name(arch),
            build_args={"BASE": base},
        )
        LOG.info(f"b1 {size_mb} MB: built linux/{arch} in {seconds:.1f} s")
        stores[arch] = store
    return stores


def image_name(arch: str) -> str:
    return f"localhost/bench/b1:{arch}"


def run_original(stores: dict[str, Store], *, root: Path, repository: str) -> dict[str, Any]:
    shared = root / "shared-original"
    merge = Store(root=root / "merge-store")
    shutil.rmtree(shared, ignore_errors=True)
    merge.remove()
    shared.mkdir(parents=True)
    started = time.perf_counter()
    for arch, store in stores.items():
        run(["skopeo", "copy", "--quiet", store.ref(image_name(arch)),
             f"oci-archive:{shared}/container-{arch}.tar"])
    export_s = time.perf_counter() - started
    shared_bytes = dir_bytes(shared)
    with fresh_registry(root / "registry-original") as registry:
        started = time.perf_counter()
        listname = "localhost/merge/list"
        for arch in stores:
            run(["skopeo", "copy", "--quiet", f"oci-archive:{shared}/container-{arch}.tar",
                 merge.ref(f"localhost/merge/{arch}:latest")])
        run(["buildah", *merge.flags, "manifest", "create", listname])
        for arch in stores:
            run(["buildah", *merge.flags, "manifest", "add", listname,
                 f"localhost/merge/{arch}:latest"])
        run(["buildah", *merge.flags, "manifest", "push", "--all", "--tls-verify=false",
             listname, f"docker://{registry.address}/{repository}:bench"])
        publish_s = time.perf_counter() - started
        registry_bytes = dir_bytes(registry.data_dir)
    merge.remove()
    shutil.rmtree(shared, ignore_errors=True)
    return {"export_s": export_s, "publish_s": publish_s, "shared_bytes": shared_bytes,
            "registry_bytes": registry_bytes}


def run_ours(stores: dict[str, Store], *, root: Path, repository: str) -> dict[str, Any]:
    shared = root / "shared-ours"
    shutil.rmtree(shared, ignore_errors=True)
    shared.mkdir(parents=True)
    images = []
    started = time.perf_counter()
    for arch, store in stores.items():
        layout = shared / f"linux-{arch}"
        paths = PlanPaths(
            checkout="", storage_root=str(store.root / "root"),
            storage_runroot=str(store.root / "runroot"), layout=str(layout),
        )
        run(export_step(paths, image=image_name(arch), driver="overlay").argv)
        found = read_layout_image(layout, LAYOUT_REF)
        images.append(PlatformImage(
            platform=Platform.parse(f"linux/{arch}"), digest=found.manifest_digest,
            size=found.total_size, emulated=False, duration_s=0.0, layout=str(layout),
            layout_ref=LAYOUT_REF,
        ))
    export_s = time.perf_counter() - started
    export_bytes = dir_bytes(shared)
    with fresh_registry(root / "registry-ours") as registry:
        started = time.perf_counter()
        publish_images(
            images, image=ImageReference.model_validate(f"{registry.address}/{repository}"),
            tags=("bench",), source=PinnedSource(kind="local", location=str(root)),
            index_dir=shared / "index", insecure=True, emit=lambda _line: None,
        )
        publish_s = time.perf_counter() - started
        registry_bytes = dir_bytes(registry.data_dir)
    shared_bytes = dir_bytes(shared)  # the index layout hard-links blobs: counted once
    shutil.rmtree(shared, ignore_errors=True)
    return {"export_s": export_s, "publish_s": publish_s, "shared_bytes": shared_bytes,
            "export_bytes": export_bytes, "registry_bytes": registry_bytes,
            "compressed_bytes": sum(image.size for image in images),
            "compressed_bytes_per_platform": {str(i.platform): i.size for i in images}}


def bench_size(settings: Settings, *, base: str, size_mb: int) -> dict[str, Any]:
    root = settings.work / "b1" / f"{size_mb}mb"
    stores = build_images(settings, base=base, size_mb=size_mb, root=root)
    runs: dict[str, list[dict[str, Any]]] = {"original": [], "ours": []}
    try:
        for rep in range(settings.warmup + settings.reps):
            order = ("original", "ours") if rep % 2 == 0 else ("ours", "original")
            for variant in order:
                repo = f"bench/b1-{size_mb}-{variant}-{rep}"
                runner = run_original if variant == "original" else run_ours
                result = runner(stores, root=root, repository=repo)
                LOG.info(f"b1 {size_mb} MB rep {rep} {variant}: export {result['export_s']:.1f} s"
                         f" publish {result['publish_s']:.1f} s")
                if rep >= settings.warmup:
                    runs[variant].append(result)
    finally:
        for store in stores.values():
            store.remove()
        shutil.rmtree(root, ignore_errors=True)
    return summarise_size(size_mb, runs)


def summarise_size(size_mb: int, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {"size_mb": size_mb, "runs": runs}
    for variant, results in runs.items():
        out[variant] = {
            key: summary([r[key] for r in results])
            for key in ("export_s", "publish_s", "shared_bytes", "registry_bytes")
        }
    ours = runs["ours"][0]
    out["ours"]["compressed_bytes"] = ours["compressed_bytes"]
    out["ours"]["compressed_bytes_per_platform"] = ours["compressed_bytes_per_platform"]
    out["ours"]["export_bytes"] = ours["export_bytes"]
    out["ratio_original_over_ours"] = {
        key: out["original"][key]["median"] / out["ours"][key]["median"]
        for key in ("export_s", "publish_s", "shared_bytes", "registry_bytes")
    }
    total = [
        o["export_s"] + o["publish_s"] for o in runs["original"]
    ], [u["export_s"] + u["publish_s"] for u in runs["ours"]]
    out["original"]["total_s"] = summary(total[0])
    out["ours"]["total_s"] = summary(total[1])
    out["ratio_original_over_ours"]["total_s"] = (
        out["original"]["total_s"]["median"] / out["ours"]["total_s"]["median"]
    )
    return out


def bench(settings: Settings, *, base: str) -> dict[str, Any]:
    return {"sizes": [bench_size(settings, base=base, size_mb=s) for s in settings.sizes_mb]}
