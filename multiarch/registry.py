"""Registry I/O through skopeo: push an index layout by digest, read manifests, check them.

skopeo carries the registry's authentication (the machine's auth.json), TLS settings and
retries, and with `--preserve-digests` it uploads the layout's bytes unchanged: no
unpacking into container storage and no recompression, unlike `buildah manifest push`.
Tags are not written here: `multiarch.registry_api` PUTs the pushed index's exact bytes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multiarch.errors import (
    PublishError,
    StepFailed,
    StepFailure,
    TransientError,
    TransientStepFailure,
)
from multiarch.failures import is_transient_message
from multiarch.ocispec import sha256_digest
from multiarch.process import Step, capture, is_transient, run_step

PUSH_TIMEOUT_S = 3600
INSPECT_TIMEOUT_S = 120
RETRY_TIMES = "3"


@dataclass(frozen=True, kw_only=True)
class RegistryTarget:
    name: str  # registry/repository
    insecure: bool = False

    def tls_flag(self, option: str) -> list[str]:
        return [f"{option}=false"] if self.insecure else []


def push_layout(
    layout: Path,
    ref_name: str,
    *,
    destination: str,
    target: RegistryTarget,
    emit: Callable[[str], None],
    label: str,
) -> None:
    """Copy a layout's index with every image under it, digests preserved."""
    push_all(f"oci:{layout}:{ref_name}", destination=destination, target=target, emit=emit,
             label=label)


def push_all(
    source: str,
    *,
    destination: str,
    target: RegistryTarget,
    emit: Callable[[str], None],
    label: str,
) -> None:
    """Copy an index (or manifest list) with every image under it from a skopeo source
    (`oci:DIR:REF`, `dir:DIR`), digests preserved."""
    argv = (
        "skopeo",
        "copy",
        "--all",
        "--preserve-digests",
        "--retry-times",
        RETRY_TIMES,
        *target.tls_flag("--dest-tls-verify"),
        source,
        f"docker://{destination}",
    )
    try:
        run_step(
            Step(name="push", argv=argv),
            emit=emit,
            deadline=time.monotonic() + PUSH_TIMEOUT_S,
            label=label,
        )
    except StepFailure as exc:
        raise skopeo_failure(exc, label=label, destination=destination) from exc


def skopeo_error_line(tail: list[str]) -> str:
    """skopeo's own error: its last `Error:`/`level=fatal` line, else its last line.

    Earlier lines can be retries that later passed; the error line is why it stopped.
    """
    lines = [line.strip() for line in tail if line.strip()]
    for line in reversed(lines):
        if line.startswith("Error") or "level=fatal" in line:
            return _message_of(line)
    return lines[-1] if lines else "no output"


def _message_of(line: str) -> str:
    """`time="..." level=fatal msg="what"` -> `what`; other lines as they are."""
    found = re.search(r'level=fatal msg="((?:[^"\\]|\\.)*)"', line)
    return found.group(1).replace('\\"', '"') if found else line


def skopeo_failure(exc: StepFailure, *, label: str, destination: str) -> StepFailure:
    """Re-classify a failed push by skopeo's error line: a registry 503 is transient."""
    line = skopeo_error_line(exc.tail)
    message = f"{label} pushing {destination} failed (exit {exc.exit_code}): {line}"
    kind = TransientStepFailure if is_transient_message(line) else StepFailed
    return kind(message, step=exc.step, exit_code=exc.exit_code, tail=exc.tail)


def fetch_manifest(reference: str, *, target: RegistryTarget) -> bytes | None:
    """The raw manifest bytes a reference resolves to, or None when it does not exist."""
    argv = [
        "skopeo",
        "inspect",
        "--raw",
        "--retry-times",
        RETRY_TIMES,
        *target.tls_flag("--tls-verify"),
        f"docker://{reference}",
    ]
    done = capture(argv, what=f"reading {reference}", timeout_s=INSPECT_TIMEOUT_S)
    if done.ok:
        return done.output
    error = done.stderr.lower()
    # MANIFEST_UNKNOWN, or NAME_UNKNOWN for a repository that does not exist yet (what
    # go-containerregistry's registry, and others, answer where distribution says the former)
    if any(text in error for text in ("manifest unknown", "name unknown", "not found")):
        return None
    if is_transient(done):
        raise TransientError(f"reading {reference} failed: {done.last_error()}")
    raise PublishError(f"reading {reference} failed: {done.last_error()}")


def check_served(
    reference: str,
    served: bytes | None,
    *,
    expected_digest: str,
    expected_manifests: dict[str, str],
) -> dict[str, Any]:
    """Check a tag serves exactly the computed index, with every platform's manifest.

    `served` is what the tag returned (None: no such tag); `expected_manifests` maps
    platform text (linux/arm64) to its manifest digest.
    """
    if served is None:
        raise PublishError(f"{reference} does not exist after the push")
    digest = sha256_digest(served)
    if digest != expected_digest:
        raise PublishError(
            f"{reference} resolves to {digest}, not the computed index {expected_digest}: "
            "another push raced this one, or the registry rewrote the index"
        )
    index = json.loads(served)
    present = {m.get("digest") for m in index.get("manifests", [])}
    missing = [p for p, d in expected_manifests.items() if d not in present]
    if missing:
        raise PublishError(f"{reference} lacks platforms {', '.join(missing)}")
    return index
