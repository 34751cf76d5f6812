"""The control-plane binary: built from tests/cluster/controlplane once per go.sum.

One `go build` links etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
kubectl into one program (see its main.go). A cold build compiles most of Kubernetes and
takes minutes on two cores, so the result is kept under `.local/controlplane/<key>/`,
where the key hashes go.mod, go.sum and main.go: a second `make cluster` (or CI run on the
same machine, which shares Go's build cache in ~/.cache/go-build) reuses it, and a changed
pin builds a new one. Versions come from the Go module proxy, nothing else.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

MODULE = Path(__file__).resolve().parent / "controlplane"
REPO_ROOT = MODULE.parents[2]
KEYED_FILES = ("go.mod", "go.sum", "main.go")
NAME = "controlplane"


def cache_key() -> str:
    """The pins, the program and how it is linked: any change means another binary."""
    digest = hashlib.sha256(" ".join(_build_flags()).encode())
    for name in KEYED_FILES:
        digest.update(name.encode() + b"\0" + (MODULE / name).read_bytes())
    return digest.hexdigest()[:16]


def _build_flags() -> list[str]:
    return ["-trimpath", "-buildvcs=false", f"-ldflags={_ldflags()}"]


def kubernetes_version() -> str:
    for line in (MODULE / "go.mod").read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["k8s.io/kubernetes"]:
            return parts[1]
    raise RuntimeError("tests/cluster/controlplane/go.mod does not require k8s.io/kubernetes")


def _ldflags() -> str:
    """Strip symbols, and stamp the release as Kubernetes' own build does: the API
    server's /version, kubectl's skew check and the components' compatibility version read
    these (a plain `go build` says v0.0.0-master)."""
    version = kubernetes_version()
    major, minor = version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {package}.gitVersion={version}", f"-X {package}.gitMajor={major}",
                  f"-X {package}.gitMinor={minor}", f"-X {package}.gitTreeState=clean"]
    return " ".join(flags)


def binary_path(state_root: Path) -> Path:
    return state_root.resolve() / "controlplane" / cache_key() / NAME


def kubectl_path(state_root: Path = REPO_ROOT / ".local") -> Path:
    """The `kubectl` link next to the binary (kubectl is one of its subcommands)."""
    return binary_path(state_root).parent / "kubectl"


def ensure_binary(state_root: Path, *, log: bool = True) -> Path:
    """The binary for the current pins, built when missing (with a `kubectl` link)."""
    target = binary_path(state_root)
    if not target.exists():
        go = shutil.which("go") or "/usr/local/go/bin/go"
        if not Path(go).exists():
            raise RuntimeError("the control plane is built with Go: install Go 1.26 (`go`)")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        if log:
            print(f"building the Kubernetes {kubernetes_version()} control plane "
                  f"(cold: minutes; cached as {target})", file=sys.stderr, flush=True)
        started = time.monotonic()
        subprocess.run(
            [go, "build", *_build_flags(), "-o", str(partial), "."],
            cwd=MODULE, check=True,
        )
        partial.rename(target)
        (target.parent / "build-seconds").write_text(f"{time.monotonic() - started:.0f}\n")
        for old in target.parent.parent.iterdir():  # earlier pins: gone
            if old != target.parent:
                shutil.rmtree(old, ignore_errors=True)
    link = kubectl_path(state_root)
    if not link.exists():
        link.symlink_to(NAME)
    return target
