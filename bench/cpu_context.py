"""A build context whose one RUN step is CPU-bound: a busybox sh counting loop."""

from __future__ import annotations

from pathlib import Path

CONTAINERFILE = """\
ARG BASE
FROM $BASE
ARG LOOPS=0
RUN i=0; while [ $i -lt $LOOPS ]; do i=$((i+1)); done; echo "$i loops on $(uname -m)" > /loops
"""


def cpu_context(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "Containerfile").write_text(CONTAINERFILE)
    return dest
