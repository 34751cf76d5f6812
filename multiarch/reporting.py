"""How a result reads: table rows and a markdown summary, shared by the CLI and artifacts."""

from __future__ import annotations

from multiarch.results import BuildResult


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def platform_rows(result: BuildResult) -> list[dict[str, str]]:
    """One row per platform asked for: those in the index, then those left out and why."""
    return published_rows(result) + [
        {"platform": str(item.platform), "digest": "-", "size": "-", "duration": "-",
         "build": f"left out: {item.reason}"}
        for item in result.left_out
    ]


def published_rows(result: BuildResult) -> list[dict[str, str]]:
    return [
        {
            "platform": str(p.platform),
            "digest": p.digest,
            "size": human_size(p.size),
            "duration": f"{p.duration_s:.1f} s",
            "build": "emulated (QEMU)" if p.emulated else "native",
        }
        for p in result.platforms
    ]


def markdown_summary(result: BuildResult) -> str:
    lines = [
        f"# Published `{result.image}`",
        "",
        f"- index digest: `{result.index_digest}`",
        f"- tags: {', '.join(f'`{t}`' for t in result.tags)}",
        f"- pull: `{result.pull_reference}`",
        *([f"- left out: {', '.join(f'`{i.platform}`' for i in result.left_out)} (optional, "
           "failed: see below)"] if result.left_out else []),
        "",
        "| platform | digest | size | duration | build |",
        "|---|---|---|---|---|",
    ]
    for row in published_rows(result):
        lines.append(
            f"| {row['platform']} | `{row['digest']}` | {row['size']} | "
            f"{row['duration']} | {row['build']} |"
        )
    lines += left_out_markdown(result)
    lines += supply_chain_markdown(result)
    return "\n".join(lines) + "\n"


def left_out_markdown(result: BuildResult) -> list[str]:
    """Optional platforms that failed: the index was published without them."""
    if not result.left_out:
        return []
    lines = ["", "## Left out", "",
             f"{len(result.left_out)} optional platform(s) failed; the index was published "
             "without them:", ""]
    lines += [f"- **{item.platform}**: {item.reason}" for item in result.left_out]
    return lines


def supply_chain_markdown(result: BuildResult) -> list[str]:
    """The referrers attached at publish, by digest: what `oras discover` or the referrers
    API shows for each manifest."""
    if not result.attestations:
        return ["", "No SBOM, provenance or signature was attached."]
    signed = (f"signed with GPG key `{result.signed_by}`" if result.signed_by
              else "not signed (no key)")
    lines = ["", "## Supply chain", "", f"Attached as OCI referrers, {signed}; check with "
             f"`multiarch verify {result.pull_reference} --key PUBLIC_KEY`.", "",
             "| about | kind | referrer digest | size |", "|---|---|---|---|"]
    lines += [f"| {a.subject} | {a.kind} | `{a.digest}` | {human_size(a.size)} |"
              for a in result.attestations]
    return lines


def text_table(result: BuildResult) -> str:
    rows = platform_rows(result)
    headers = ["platform", "digest", "size", "duration", "build"]
    widths = {h: max(len(h), *(len(r[h]) for r in rows)) for h in headers}
    out = ["  ".join(h.ljust(widths[h]) for h in headers)]
    out += ["  ".join(r[h].ljust(widths[h]) for h in headers) for r in rows]
    return "\n".join(line.rstrip() for line in out)


def artifact_key(result: BuildResult) -> str:
    return artifact_key_for(result.image)


def artifact_key_for(image: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    last = image.rsplit("/", 1)[-1].lower()
    cleaned = "".join(c if c.isascii() and c.isalnum() else "-" for c in last)
    return cleaned.strip("-") or "image"


def failure_markdown(image: str, failures: list[tuple[str, BaseException | str]]) -> str:
    """Which platform failed, at which step, with its last log lines."""
    lines = [f"# `{image}` was not published", "",
             f"{len(failures)} platform(s) failed; nothing was pushed.", ""]
    for platform, reason in failures:
        step = getattr(reason, "step", None)
        exit_code = getattr(reason, "exit_code", None)
        lines.append(f"## {platform}")
        lines.append(f"- step: `{step or '?'}`" + (f", exit code {exit_code}"
                                                    if exit_code is not None else ""))
        lines.append(f"- reason: {reason}")
        tail = getattr(reason, "tail", None) or []
        if tail:
            lines += ["", "```", *tail[-TAIL_IN_REPORT:], "```"]
        lines.append("")
    return "\n".join(lines)


TAIL_IN_REPORT = 15
