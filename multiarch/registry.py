"""Registry I/O through skopeo: push an index layout by digest, tag it, read it back.

skopeo carries the registry's authentication (the machine's auth.json), TLS settings and
retries, and with `--preserve-digests` it uploads the layout's bytes unchanged: no
unpacking into container storage and no recompression, unlike `buildah manifest push`.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multiarch.errors import ConfigurationError, PublishError, TransientError
from multiarch.plan import Step
from multiarch.runners.processes import TRANSIENT_MARKERS, run_step

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
    argv = (
        "skopeo",
        "copy",
        "--all",
        "--preserve-digests",
        "--retry-times",
        RETRY_TIMES,
        *target.tls_flag("--dest-tls-verify"),
        f"oci:{layout}:{ref_name}",
        f"docker://{destination}",
    )
    run_step(
        Step(name="push", argv=argv),
        emit=emit,
        deadline=time.monotonic() + PUSH_TIMEOUT_S,
        label=label,
    )


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
    try:
        done = subprocess.run(argv, capture_output=True, timeout=INSPECT_TIMEOUT_S, check=False)
    except FileNotFoundError as exc:
        raise ConfigurationError("skopeo is not installed: install Debian package skopeo") from exc
    except subprocess.TimeoutExpired as exc:
        raise TransientError(f"reading {reference} timed out") from exc
    if done.returncode == 0:
        return done.stdout
    error = done.stderr.decode(errors="replace").strip()
    if "manifest unknown" in error.lower() or "not found" in error.lower():
        return None
    if any(marker in error.lower() for marker in TRANSIENT_MARKERS):
        raise TransientError(f"reading {reference} failed: {error.splitlines()[-1]}")
    raise PublishError(f"reading {reference} failed: {error.splitlines()[-1] if error else '?'}")


def manifest_digest(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def verify_tag(
    reference: str,
    *,
    expected_digest: str,
    expected_manifests: dict[str, str],
    target: RegistryTarget,
) -> dict[str, Any]:
    """Check a tag serves exactly the computed index, with every platform's manifest.

    `expected_manifests` maps platform text (linux/arm64) to its manifest digest.
    """
    raw = fetch_manifest(reference, target=target)
    if raw is None:
        raise PublishError(f"{reference} does not exist after the push")
    digest = manifest_digest(raw)
    if digest != expected_digest:
        raise PublishError(
            f"{reference} resolves to {digest}, not the computed index {expected_digest}: "
            "another push raced this one, or the registry rewrote the index"
        )
    index = json.loads(raw)
    served = {m.get("digest") for m in index.get("manifests", [])}
    missing = [p for p, d in expected_manifests.items() if d not in served]
    if missing:
        raise PublishError(f"{reference} lacks platforms {', '.join(missing)}")
    return index
