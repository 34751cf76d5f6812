"""Write the results: JSON (everything), a markdown table per benchmark, a PNG chart."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

MB = 10**6


def fmt_s(stat: dict[str, Any]) -> str:
    return f"{stat['median']:.2f} s ({stat['min']:.2f}-{stat['max']:.2f})"


def fmt_mb(value: float) -> str:
    return f"{value / MB:.1f} MB"


def markdown(results: dict[str, Any]) -> str:
    out = [f"# Benchmark results ({results['finished']})", ""]
    m = results["machine"]
    out.append(
        f"Machine: {m['cores']} cores, {m['memory_gb']} GB, {m['machine']}, storage driver "
        f"{m['storage_driver']} on {m['work_filesystem']}; {m['buildah']}; {m['skopeo']}; "
        f"qemu-user-static {m['qemu_user_static']}; docker-registry {m['docker_registry']}; "
        f"prefect {m['prefect']}. Settings: {results['settings']}. Times: median (min-max)."
    )
    if "b1" in results:
        out += ["", "## B1 handoff and publish (2 platforms: linux/amd64 + linux/arm64)", "",
                "original: oci-archive handoff and a buildah merge (seed.md); ours: the shared "
                "handoff (OCI layouts, push by digest at publish); registry: the registry "
                "handoff (each build pushes by digest; publish PUTs the index and tags). "
                "export = everything after the build until publish starts; publish = until "
                "every tag is verified.", "",
                "| size | variant | export | publish | export+publish | shared bytes | "
                "registry bytes |", "|---|---|---|---|---|---|---|"]
        for size in results["b1"]["sizes"]:
            for variant in ("original", "ours", "registry"):
                if variant not in size:
                    continue
                v = size[variant]
                out.append(
                    f"| {size['size_mb']} MiB | {variant} | {fmt_s(v['export_s'])} | "
                    f"{fmt_s(v['publish_s'])} | {fmt_s(v['total_s'])} | "
                    f"{fmt_mb(v['shared_bytes']['median'])} | "
                    f"{fmt_mb(v['registry_bytes']['median'])} |"
                )
            r = size["ratio_original_over_ours"]
            out.append(
                f"| {size['size_mb']} MiB | **original/ours** | {r['export_s']:.2f}x | "
                f"**{r['publish_s']:.2f}x** | {r['total_s']:.2f}x | {r['shared_bytes']:.2f}x | "
                f"{r['registry_bytes']:.2f}x |"
            )
            if "ratio_original_over_registry" in size:
                r = size["ratio_original_over_registry"]
                out.append(
                    f"| {size['size_mb']} MiB | **original/registry** | {r['export_s']:.2f}x | "
                    f"**{r['publish_s']:.2f}x** | {r['total_s']:.2f}x | - | "
                    f"{r['registry_bytes']:.2f}x |"
                )
        out += ["", "| size | compressed image (both platforms) | ours: shared bytes after "
                "export | ours: shared bytes incl. index layout |", "|---|---|---|---|"]
        for size in results["b1"]["sizes"]:
            o = size["ours"]
            out.append(
                f"| {size['size_mb']} MiB | {fmt_mb(o['compressed_bytes'])} | "
                f"{fmt_mb(o['export_bytes'])} | {fmt_mb(o['shared_bytes']['median'])} |"
            )
    if "b2" in results:
        b2 = results["b2"]
        out += ["", "## B2 orchestration overhead (linux/amd64, native)", "",
                "| build | flow | bare script | flow/bare | flow - bare | flow: build task | "
                "flow: outside the build task |", "|---|---|---|---|---|---|---|"]
        for case in b2["cases"]:
            out.append(
                f"| {case['name']} ({case['loops']} loops) | {fmt_s(case['flow_s'])} | "
                f"{fmt_s(case['bare_s'])} | **{case['ratio_flow_over_bare']:.2f}x** | "
                f"{case['difference_s']:+.2f} s | {fmt_s(case['flow_build_task_s'])} | "
                f"{fmt_s(case['flow_outside_build_s'])} |"
            )
        out += ["", f"No-op flow with one task (fixed cost of a flow run): "
                f"{fmt_s(b2['noop_flow_s'])}"]
    if "b3" in results:
        b3 = results["b3"]
        out += ["", "## B3 native vs emulated (same RUN step)", "",
                "| loops | linux/amd64 native | linux/arm64 QEMU | emulated/native |",
                "|---|---|---|---|",
                f"| {b3['loops']} | {fmt_s(b3['native_amd64_s'])} | "
                f"{fmt_s(b3['emulated_arm64_s'])} | **{b3['ratio_emulated_over_native']:.1f}x** |"]
    if "b4" in results:
        out += b4_markdown(results["b4"])
    if "b5" in results:
        out += b5_markdown(results["b5"])
    if "b6" in results:
        out += b6_markdown(results["b6"])
    return "\n".join(out) + "\n"


def b4_markdown(b4: dict[str, Any]) -> list[str]:
    out = ["", f"## B4 registry cache: cold build vs warm rebuild (RUN: {b4['work']} lines of "
           "`seq | gzip -9`; COPY changed)", "",
           "| platform | cold (empty cache) | warm (cache, COPY changed) | cold/warm | "
           "RUN layer reused |", "|---|---|---|---|---|"]
    for arch in b4["arches"]:
        out.append(
            f"| {arch['platform']} | {fmt_s(arch['cold_s'])} | {fmt_s(arch['warm_s'])} | "
            f"**{arch['ratio_cold_over_warm']:.1f}x** | "
            f"{arch['run_layer_reused']}/{arch['runs']} |"
        )
    return out


def b5_markdown(b5: dict[str, Any]) -> list[str]:
    modes = b5["modes"]
    out = ["", f"## B5 supply chain at publish ({' + '.join(b5['platforms'])}, the same "
           "layouts each time)", "",
           "plain: publish only (B1's ours); attest: + an SBOM (syft) and provenance per "
           "platform; signed: + GPG signatures of the index, each platform and each "
           "attestation. Each publish checks it all back before the tags move.", "",
           "| mode | publish | extra per platform vs plain | SBOM per platform |",
           "|---|---|---|---|",
           f"| plain | {fmt_s(modes['plain']['publish_s'])} | - | - |"]
    for mode in ("attest", "signed"):
        m = modes[mode]
        sboms = ", ".join(f"{p.split('/')[-1]} {fmt_s(s)}" for p, s in m["sbom_s"].items())
        out.append(f"| {mode} | {fmt_s(m['publish_s'])} | "
                   f"**{m['extra_per_platform_s']:+.2f} s** | {sboms or '-'} |")
    out.append(f"| **signed/plain** | **{b5['ratio_signed_over_plain']:.2f}x** | | |")
    sizes = modes["signed"]["sizes"]
    out += ["", "| attestation | bytes |", "|---|---|"]
    for kind in ("sbom", "provenance"):
        for platform, size in sizes[kind].items():
            out.append(f"| {kind} of {platform} | {size} |")
    sig = sizes["signature"]
    out.append(f"| signatures ({sig['count']}, up to {sig['bytes_each_max']} bytes each) | "
               f"{sig['bytes_total']} |")
    return out


def b6_markdown(b6: dict[str, Any]) -> list[str]:
    backends = b6["backends"]
    out = ["", f"## B6 start skew of builds sharing a concurrency tag ({b6['tag']}), SQLite vs "
           "PostgreSQL", "",
           f"{b6['clients']} flow runs started on one barrier, each with tasks tagged "
           f"{b6['tag']} (held {b6['hold_s']:.0f} s); the limit admits them all, so they should "
           "start together. Skew = latest - earliest task start_time, per repetition "
           f"({b6['reps']} repetitions). make serve: until it returns, everything ready.", "",
           "| backend | builds | skew median | skew max | make serve cold | make serve warm |",
           "|---|---|---|---|---|---|"]
    for name, backend in backends.items():
        for layout, skew in backend["skew"].items():
            out.append(
                f"| {name} | {layout} | {skew['median']:.3f} s | {skew['max']:.3f} s | "
                f"{backend['serve_cold']['ready_s']:.1f} s | "
                f"{backend['serve_warm']['ready_s']:.1f} s |"
            )
    for layout, ratio in b6.get("ratio_sqlite_over_postgres", {}).items():
        out.append(f"| **sqlite/postgres** | {layout} | **{ratio:.1f}x** | | | |")
    return out


def chart_groups(results: dict[str, Any]) -> list[tuple[str, list[tuple[str, float, float]]]]:
    """Panels of (label, value A, value B) bars: original/ours, flow/bare, native/emulated,
    cold/warm, supply chain/plain."""
    groups = []
    if "b1" in results:
        groups.append(("B1 publish time, s (original vs ours)", [
            (f"{s['size_mb']} MiB", s["original"]["publish_s"]["median"],
             s["ours"]["publish_s"]["median"]) for s in results["b1"]["sizes"]]))
    if "b2" in results:
        groups.append(("B2 wall time, s (flow vs bare)", [
            (c["name"], c["flow_s"]["median"], c["bare_s"]["median"])
            for c in results["b2"]["cases"]]))
    if "b3" in results:
        b3 = results["b3"]
        groups.append(("B3 build time, s (emulated arm64 vs native amd64)", [
            ("RUN loop", b3["emulated_arm64_s"]["median"], b3["native_amd64_s"]["median"])]))
    if "b4" in results:
        groups.append(("B4 build time, s (cold vs warm)", [
            (a["platform"].split("/")[-1], a["cold_s"]["median"], a["warm_s"]["median"])
            for a in results["b4"]["arches"]]))
    if "b5" in results:
        modes = results["b5"]["modes"]
        plain = modes["plain"]["publish_s"]["median"]
        groups.append(("B5 publish time, s (supply chain vs plain)", [
            (mode, modes[mode]["publish_s"]["median"], plain) for mode in ("attest", "signed")]))
    if "b6" in results:
        sqlite, pg = (results["b6"]["backends"][name] for name in ("sqlite", "postgres"))
        groups.append(("B6 start skew, s (SQLite vs PostgreSQL)", [
            (layout, sqlite["skew"][layout]["median"], pg["skew"][layout]["median"])
            for layout in sqlite["skew"]]))
    return groups


def write_png(path: Path, results: dict[str, Any]) -> str:
    groups = chart_groups(results)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        write_plain_png(path, groups)
        return "plain"
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(5 * max(len(groups), 1), 4))
    axes_list = axes if hasattr(axes, "__len__") else [axes]
    for ax, (title, bars) in zip(axes_list, groups, strict=False):
        xs = range(len(bars))
        names = title.split("(")[-1].rstrip(")").split(" vs ")
        ax.bar([x - 0.2 for x in xs], [b[1] for b in bars], width=0.4, label=names[0])
        ax.bar([x + 0.2 for x in xs], [b[2] for b in bars], width=0.4, label=names[-1])
        ax.set_xticks(list(xs), [b[0] for b in bars])
        ax.set_title(title.split(" (")[0], fontsize=10)
        ax.set_ylabel("seconds (median)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return "matplotlib"


def write_plain_png(path: Path, groups: list[tuple[str, list[tuple[str, float, float]]]]) -> None:
    """Bars only, no text (no font): a fallback when matplotlib is not installed."""
    panel_w, height, pad = 240, 200, 20
    width = max(1, len(groups)) * panel_w
    pixels = [[(255, 255, 255)] * width for _ in range(height)]
    colors = ((31, 119, 180), (255, 127, 14))
    for g, (_, bars) in enumerate(groups):
        top = max([max(b[1], b[2]) for b in bars] + [1e-9])
        slot = (panel_w - 2 * pad) // max(1, len(bars))
        for i, bar in enumerate(bars):
            for j, value in enumerate(bar[1:]):
                x0 = g * panel_w + pad + i * slot + j * slot // 2 + 2
                h = int((height - 2 * pad) * value / top)
                for y in range(height - pad - h, height - pad):
                    for x in range(x0, x0 + slot // 2 - 4):
                        pixels[y][x] = colors[j]
        for x in range(g * panel_w + pad // 2, (g + 1) * panel_w - pad // 2):
            pixels[height - pad][x] = (0, 0, 0)
    raw = b"".join(b"\x00" + bytes(c for px in row for c in px) for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
           0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    path.write_bytes(png)


def write_all(out_dir: Path, results: dict[str, Any]) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "latest.json", "md": out_dir / "latest.md",
             "png": out_dir / "latest.png"}
    results["chart"] = write_png(paths["png"], results)
    paths["json"].write_text(json.dumps(results, indent=2, default=str) + "\n")
    paths["md"].write_text(markdown(results))
    return paths
