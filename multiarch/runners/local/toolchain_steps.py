"""The local runner's `--toolchain debian13`: a platform's buildah and skopeo steps run from
the Debian 13 rootfs (multiarch.toolchain), with exactly the host paths they need bound.

The plan is the same for every toolchain (multiarch.plan); only here do its steps change,
from `buildah ...` to the toolchain helper entering the rootfs and then `buildah ...`. A
git fetch step stays on the host: it needs the host's git, its credentials store and, for a
`file://` source, the host's repository, and buildah never sees it.

What the steps see of the host, and why:
- read-write: the work dir (storage, scratch, the per-platform RUN cache mounts, a shared
  handoff under it) and the layout's directory (a shared dir elsewhere);
- read-only: every other path a step names (the context, a Containerfile outside it, build
  secrets' and build contexts' files, found by multiarch.toolchain.guess_binds) and the
  registry trust and logins multiarch.registry_access reads, so the rootfs's skopeo
  trusts and logs in as our own client does;
- /tmp and /var/tmp, always (an `--ssh` agent socket lives under /tmp).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from multiarch.process import Step
from multiarch.registry_access import trust_and_auth_paths
from multiarch.toolchain import Toolchain, guess_binds, normalise_binds, wrap_step
from multiarch.toolchain_rootfs import ensure_rootfs

HOST = "host"
# Steps that run on the host whatever the toolchain (see the module docstring).
HOST_STEPS = frozenset({"fetch"})


def toolchain_for(name: str, emit: Callable[[str], None] | None = None) -> Toolchain | None:
    """None for the host's tools; else the cached rootfs (built on a miss, about a minute)."""
    if name == HOST:
        return None
    return ensure_rootfs(emit=emit).toolchain()


def in_toolchain(steps: Iterable[Step], *, toolchain: Toolchain, writable: Iterable[str],
                 emulated: bool) -> tuple[Step, ...]:
    """`steps` with each buildah/skopeo step wrapped to run inside `toolchain`."""
    read_write = normalise_binds(writable)
    config = [str(path) for path in trust_and_auth_paths()]
    wrapped = []
    for step in steps:
        if step.name in HOST_STEPS:
            wrapped.append(step)
            continue
        named = [path for path in guess_binds(step.argv, step.env)
                 if not _under(path, read_write) and Path(path).exists()]
        wrapped.append(wrap_step(step, toolchain=toolchain, binds=read_write,
                                 ro_binds=[*named, *config], binfmt=emulated))
    return tuple(wrapped)


def _under(path: str, parents: Iterable[str]) -> bool:
    return any(path == parent or path.startswith(parent.rstrip("/") + "/")
               for parent in parents)
