"""B5: what the supply chain costs at publish, per mode, over the same two layouts.

A hello-like context (FROM the base, one small RUN) is built once per platform with the
project's local build (`multiarch.runners.local.runner.build_platform`, shared handoff:
an OCI layout each). The layouts are kept, and each repetition publishes them with
`multiarch.publish.publish_images` three ways, each to a repository nobody wrote yet,
rotating which mode goes first:

- plain: no supply chain (what B1 measures as "ours");
- attest: an SBOM (syft over the layout) and SLSA provenance per platform, attached as
  referrers and read back by the check before any tag moves;
- signed: the same, and a GPG signature of the index per tag, of each platform manifest
  and of each attestation, all verified with the public half before any tag moves.

So the difference between two modes is the supply chain alone: same bytes, same registry,
nothing rebuilt. The attestation sizes come from the publish result; the SBOM time per
platform from publish's own "[publish] SBOM of ... in X s" lines.
"""

from __future__ import annotations

import re
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness import LOG, Settings, summary
from multiarch.attest import SupplyChainPlan, supply_plan
from multiarch.publish import publish_images
from multiarch.references import ImageReference
from multiarch.request import BuildRequest, RunnerOptions
from multiarch.results import BuildResult, PlatformImage
from multiarch.runclaim import remove_tree
from multiarch.runners.local.runner import build_platform
from multiarch.signing import generate_key
from multiarch.source import PinnedSource, pin_source
from multiarch.workspace import RunDirs, run_dirs

ARCHES = ("amd64", "arm64")
MODES = ("plain", "attest", "signed")
CONTAINERFILE = """\
ARG BASE
FROM $BASE
RUN uname -m > /etc/build-arch && echo "hello from a multi-arch build" > /etc/greeting
CMD ["cat", "/etc/greeting"]
"""
SBOM_LINE = re.compile(r"\[publish\] SBOM of (\S+): \d+ bytes in ([0-9.]+) s")


class _Quiet:
    def info(self, msg: str, /) -> None:
        pass


def make_context(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "Containerfile").write_text(CONTAINERFILE)
    return dest


def build_layouts(request: BuildRequest, source: PinnedSource, dirs: RunDirs
                  ) -> list[PlatformImage]:
    """Each platform built once; the layouts stay in the run's shared directory."""
    images = []
    for platform in request.platforms:
        started = time.perf_counter()
        images.append(build_platform(request, source, platform, dirs=dirs, log=_Quiet()))
        LOG.info(f"b5: built {platform} in {time.perf_counter() - started:.1f} s")
    return images


def publish_once(images: Sequence[PlatformImage], *, request: BuildRequest,
                 source: PinnedSource, repository: str, mode: str, key_file: Path,
                 scratch: Path) -> dict[str, Any]:
    """One publish of the layouts to a new repository; returns its time, SBOM times and
    attestation sizes."""
    image = ImageReference.model_validate(f"{request.image.registry}/{repository}")
    target = request.model_copy(update={"image": image})
    plan: SupplyChainPlan | None = None
    if mode != "plain":
        plan = supply_plan(target, source, None, invocation_id=uuid.uuid4().hex)
        if mode == "signed":
            plan = plan.model_copy(update={"sign_key_file": str(key_file)})
    lines: list[str] = []
    index_dir = scratch / f"index-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    try:
        result = publish_images(images, image=image, tags=("bench",), source=source,
                                index_dir=index_dir, insecure=True, emit=lines.append,
                                supply=plan)
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(index_dir, ignore_errors=True)
    sbom_s = {match[1]: float(match[2]) for line in lines if (match := SBOM_LINE.search(line))}
    return {"publish_s": seconds, "sbom_s": sbom_s, "sizes": attestation_sizes(result)}


def attestation_sizes(result: BuildResult) -> dict[str, Any]:
    """Bytes per kind: the SBOM and provenance of each platform, and the signatures."""
    sizes: dict[str, Any] = {"sbom": {}, "provenance": {}}
    signatures = []
    for item in result.attestations:
        if item.kind == "signature":
            signatures.append(item.size)
        else:
            sizes[item.kind][item.subject] = item.size
    sizes["signature"] = {"count": len(signatures), "bytes_total": sum(signatures),
                          "bytes_each_max": max(signatures, default=0)}
    return sizes


def bench(settings: Settings, *, base: str, registry: str) -> dict[str, Any]:
    root = settings.work / "b5"
    shutil.rmtree(root, ignore_errors=True)
    context = make_context(root / "context")
    key_file, _ = generate_key(root / "key", name="multiarch bench key")
    request = BuildRequest(
        image=f"{registry}/bench/b5:latest", platforms=tuple(f"linux/{a}" for a in ARCHES),
        context=str(context), build_args={"BASE": base}, allow_emulation=True,
        insecure_registry=True, runner=RunnerOptions(work_dir=str(root / "work")),
    )
    source = pin_source(request)
    dirs = run_dirs(request, uuid.uuid4().hex)
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    try:
        images = build_layouts(request, source, dirs)
        for rep in range(settings.warmup + settings.reps):
            shift = rep % len(MODES)  # each mode goes first in turn
            for mode in MODES[shift:] + MODES[:shift]:
                result = publish_once(images, request=request, source=source,
                                      repository=f"bench/b5-{mode}-r{rep}", mode=mode,
                                      key_file=key_file, scratch=root / "scratch")
                LOG.info(f"b5 rep {rep} {mode}: publish {result['publish_s']:.1f} s")
                if rep >= settings.warmup:
                    runs[mode].append(result)
    finally:
        remove_tree(dirs.run_scratch)
        remove_tree(dirs.run_shared)
        shutil.rmtree(root, ignore_errors=True)
    return summarise(runs, platforms=[str(image.platform) for image in images])


def summarise(runs: dict[str, list[dict[str, Any]]], *, platforms: list[str]
              ) -> dict[str, Any]:
    modes = {mode: {"publish_s": summary([r["publish_s"] for r in results])}
             for mode, results in runs.items()}
    plain = modes["plain"]["publish_s"]["median"]
    for mode in ("attest", "signed"):
        modes[mode]["extra_per_platform_s"] = (
            (modes[mode]["publish_s"]["median"] - plain) / len(platforms))
        sbom_s = {p: [r["sbom_s"][p] for r in runs[mode] if p in r["sbom_s"]]
                  for p in platforms}
        modes[mode]["sbom_s"] = {p: summary(v) for p, v in sbom_s.items() if v}
        modes[mode]["sizes"] = runs[mode][-1]["sizes"]
    return {"platforms": platforms, "modes": modes,
            "ratio_signed_over_plain": modes["signed"]["publish_s"]["median"] / plain,
            "runs": {mode: [{k: v for k, v in r.items() if k != "sizes"} for r in results]
                     for mode, results in runs.items()}}
