"""B1: handoff and publish, the project's way against the original pipeline (seed.md).

Each size is built once per platform (the benchmark measures export + publish, not the
build). Per run, alternating which goes first:

- original: `skopeo copy containers-storage:... oci-archive:SHARED/container-ARCH.tar` per
  platform; merge step with fresh container storage: `skopeo copy oci-archive:...
  containers-storage:...`, `buildah manifest create`, `manifest add` per image,
  `buildah manifest push --all`.
- ours (shared handoff): `multiarch.handoff.layouts.export_step` (gzip once, into an
  `oci:` layout on the shared directory) per platform, then
  `multiarch.publish.publish_images` (push by digest, tags, verify).
- registry (registry handoff): the registry handoff's export steps per platform (gzip once
  into the build's scratch, then a push by digest: in a real run each build does this on
  its own node, in parallel; here one after the other, as the other variants export), then
  `publish_images`, which reads the manifests back and PUTs the index and the tags only.

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
from multiarch.handoff import handoff_named
from multiarch.handoff.layouts import LAYOUT_REF, export_step
from multiarch.oci import read_layout_image
from multiarch.plan import PlanPaths
from multiarch.platforms import Platform
from multiarch.publish import publish_images
from multiarch.references import ImageReference
from multiarch.request import BuildRequest
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


def run_registry(stores: dict[str, Store], *, root: Path, repository: str) -> dict[str, Any]:
    scratch = root / "scratch-registry"
    shutil.rmtree(scratch, ignore_errors=True)
    handoff = handoff_named("registry")
    with fresh_registry(root / "registry-registry") as registry:
        request = BuildRequest(
            image=f"{registry.address}/{repository}:bench", context=str(root / "context"),
            platforms=tuple(f"linux/{arch}" for arch in stores), insecure_registry=True,
            handoff="registry",
        )
        images = []
        started = time.perf_counter()
        export_bytes = 0
        for arch, store in stores.items():
            paths = PlanPaths(
                checkout="", storage_root=str(store.root / "root"),
                storage_runroot=str(store.root / "runroot"),
                layout=str(scratch / f"linux-{arch}"), digest_file=str(scratch / f"{arch}.digest"),
            )
            scratch.mkdir(parents=True, exist_ok=True)
            for step in handoff.export_steps(request, paths, image=image_name(arch)):
                run(step.argv)
            found = read_layout_image(Path(paths.layout), LAYOUT_REF)
            export_bytes += dir_bytes(Path(paths.layout))
            images.append(PlatformImage(
                platform=Platform.parse(f"linux/{arch}"), digest=found.manifest_digest,
                size=found.total_size, emulated=False, duration_s=0.0, handoff="registry",
                reference=request.image.with_digest(found.manifest_digest),
            ))
            shutil.rmtree(paths.layout)  # the build's scratch goes with the build
        export_s = time.perf_counter() - started
        started = time.perf_counter()
        publish_images(
            images, image=request.image, tags=("bench",),
            source=PinnedSource(kind="local", location=str(root)),
            index_dir=scratch / "index", insecure=True, emit=lambda _line: None,
        )
        publish_s = time.perf_counter() - started
        registry_bytes = dir_bytes(registry.data_dir)
    shutil.rmtree(scratch, ignore_errors=True)
    return {"export_s": export_s, "publish_s": publish_s, "shared_bytes": 0,
            "export_bytes": export_bytes, "registry_bytes": registry_bytes}


VARIANTS = {"original": run_original, "ours": run_ours, "registry": run_registry}


def bench_size(settings: Settings, *, base: str, size_mb: int) -> dict[str, Any]:
    root = settings.work / "b1" / f"{size_mb}mb"
    stores = build_images(settings, base=base, size_mb=size_mb, root=root)
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    names = list(VARIANTS)
    try:
        for rep in range(settings.warmup + settings.reps):
            shift = rep % len(names)  # each variant goes first in turn
            for variant in names[shift:] + names[:shift]:
                repo = f"bench/b1-{size_mb}-{variant}-{rep}"
                result = VARIANTS[variant](stores, root=root, repository=repo)
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
    for variant, results in runs.items():
        out[variant]["total_s"] = summary([r["export_s"] + r["publish_s"] for r in results])
    out["registry"]["export_bytes"] = runs["registry"][0]["export_bytes"]
    for key in ("export_s", "publish_s", "total_s"):
        out["ratio_original_over_ours"].setdefault(
            key, out["original"][key]["median"] / out["ours"][key]["median"])
    out["ratio_original_over_registry"] = {
        key: out["original"][key]["median"] / out["registry"][key]["median"]
        for key in ("export_s", "publish_s", "total_s", "registry_bytes")
    }
    return out


def bench(settings: Settings, *, base: str) -> dict[str, Any]:
    return {"sizes": [bench_size(settings, base=base, size_mb=s) for s in settings.sizes_mb]}
