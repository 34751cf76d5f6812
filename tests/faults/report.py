"""Turn the fault suite's JSON lines into the tables of docs/reliability.md.

`make reliability` runs tests/faults with MULTIARCH_FAULT_REPORT set, then this module
replaces the part of docs/reliability.md between the two GENERATED markers, so the
document always shows the last run, never a hand-written claim.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

BEGIN = "<!-- GENERATED: tests/faults/report.py -->"
END = "<!-- END GENERATED -->"


def load(path: Path) -> list[dict[str, str]]:
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    unique: dict[tuple[str, str], dict[str, str]] = {}
    for entry in entries:  # a re-run of one test replaces its earlier line
        unique[(entry.get("kind", ""), entry.get("test") or entry.get("name", ""))] = entry
    return list(unique.values())


def cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def scenario_table(entries: list[dict[str, str]]) -> list[str]:
    rows = ["| scenario | what happens | what is left |", "|---|---|---|"]
    for entry in entries:
        rows.append(f"| {cell(entry['scenario'])} | {cell(entry['what happens'])} "
                    f"| {cell(entry['what is left'])} |")
    return rows


def bad_input_table(entries: list[dict[str, str]]) -> list[str]:
    rows = ["| bad input | refused at | error (one line) |", "|---|---|---|"]
    for entry in entries:
        rows.append(f"| {cell(entry['name'])} | {cell(entry['stage'])} | "
                    f"`{cell(entry['error'])}` |")
    return rows


def render(entries: list[dict[str, str]], *, outcome: str) -> str:
    scenarios = [e for e in entries if e.get("kind") == "scenario"]
    bad = [e for e in entries if e.get("kind") == "bad-input"]
    early = sum(1 for e in bad if e.get("stage") == "validation")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip() or "?"
    lines = [
        BEGIN,
        f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit}: {outcome}; "
        f"{len(scenarios)} fault scenarios passed, {len(bad)} bad inputs refused "
        f"({early} by validation before Prefect starts, {len(bad) - early} by preflight "
        "before any build).",
        "",
        "### Fault scenarios",
        "",
        *scenario_table(scenarios),
        "",
        "### Bad inputs",
        "",
        *bad_input_table(bad),
        END,
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    report, document, outcome = Path(argv[0]), Path(argv[1]), argv[2] if len(argv) > 2 else ""
    text = document.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    document.write_text(head + render(load(report), outcome=outcome or "pytest passed") + tail)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
