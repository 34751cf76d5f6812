"""The node agent's image service: pull by digest for this node's platform, unpack once.

A kubelet asks its container runtime for an image; containerd resolves the reference to
the manifest of the node's platform, fetches it by digest and unpacks its layers once
per digest. This module does the same with skopeo and umoci, so a pod runs the files
its image really holds, for its node's architecture:

- `resolve`: `skopeo inspect --raw` of the reference (tag or digest); from an index
  the manifest whose platform is this node's (linux/amd64, linux/arm64 with variant v8
  or none), else the manifest itself. Registries on 127.0.0.1/localhost speak plain
  http (`--tls-verify=false` for those only). Credentials only ever travel in an
  `--authfile` the caller wrote (0600), never in argv.
- `pull`: `skopeo copy docker://repo@sha256:...` into a scratch OCI layout, then
  `umoci raw unpack` into the cache, keyed by manifest digest. Two agents (two
  processes) on one machine share the cache: a per-digest file lock makes one of them
  unpack and the other wait and reuse it. A container holds a shared lock on its
  digest while it runs; the least-recently-used digests beyond the size bound are
  dropped when nobody holds them.
- What this node has: `reference -> digest` per node (the kubelet's "already present
  on machine"), kept in the node's own state, so IfNotPresent/Never never ask a
  registry and a new cluster starts with an empty node, as a new machine would. With
  it, who may use it, as the 1.36 kubelet records (KubeletEnsureSecretPulledImages):
  anyone if it was pulled anonymously, else pods presenting one of the credentials it
  was pulled with (kept as hashes).

Errors are worded as containerd words them in kubelet events (`rpc error: code =
NotFound desc = failed to pull and unpack image ...`), with skopeo's reason kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.cluster.agent import watchdog

REPO_ROOT = watchdog.REPO_ROOT
DEFAULT_CACHE = REPO_ROOT / ".local" / "agent-images"
DEFAULT_MAX_BYTES = 8 << 30
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SKOPEO_TIMEOUT_S = 600
HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}


class PullError(Exception):
    """Why a pull failed, in containerd's words (what `Failed to pull image` shows)."""


@dataclass(frozen=True)
class Reference:
    """A normalised image reference, as containerd names it (docker.io/library/...)."""

    original: str
    repository: str  # registry/path, no tag or digest
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, image: str) -> Reference:
        name, _, digest = image.partition("@")
        tag = None
        last = name.rsplit("/", 1)[-1]
        if ":" in last:
            name, tag = name.rsplit(":", 1)
        first, _, rest = name.partition("/")
        if not rest or not ("." in first or ":" in first or first == "localhost"):
            first, rest = "docker.io", name
            if "/" not in rest:
                rest = f"library/{rest}"
        if tag is None and not digest:
            tag = "latest"
        return cls(original=image, repository=f"{first}/{rest}", tag=tag, digest=digest or None)

    @property
    def full(self) -> str:
        return self.repository + (f":{self.tag}" if self.tag else "") + (
            f"@{self.digest}" if self.digest else "")

    @property
    def registry(self) -> str:
        return self.repository.split("/", 1)[0]

    @property
    def insecure(self) -> bool:
        """Plain http: only for registries on this machine's loopback."""
        host = self.registry.rsplit(":", 1)[0] if not self.registry.startswith("[") else ""
        return host in ("127.0.0.1", "localhost") or self.registry.startswith("[::1]")


@dataclass(frozen=True)
class ImageConfig:
    """The parts of the OCI image config a container runtime applies."""

    entrypoint: list[str]
    cmd: list[str]
    env: list[str]
    working_dir: str

    @classmethod
    def from_blob(cls, blob: dict[str, Any]) -> ImageConfig:
        config = blob.get("config") or {}
        return cls(entrypoint=list(config.get("Entrypoint") or []),
                   cmd=list(config.get("Cmd") or []), env=list(config.get("Env") or []),
                   working_dir=config.get("WorkingDir") or "")

    def environment(self) -> dict[str, str]:
        env = {"PATH": DEFAULT_PATH}
        for item in self.env:
            key, _, value = item.partition("=")
            env[key] = value
        return env


@dataclass(frozen=True)
class Image:
    """One unpacked image in the cache, as a container of this node runs it."""

    reference: Reference
    digest: str  # the platform manifest's digest
    rootfs: Path
    config: ImageConfig
    size: int  # compressed bytes (config + layers), what the kubelet's event reports

    @property
    def image_id(self) -> str:
        return f"{self.reference.repository}@{self.digest}"


@dataclass(frozen=True)
class PullResult:
    image: Image
    unpacked: bool  # False: the digest was already in the cache
    seconds: float  # time spent pulling (excluding waiting for another puller)


class ImageStore:
    """One node's images: the shared unpacked cache plus what this node pulled."""

    def __init__(self, *, cache: Path, node_dir: Path, arch: str,
                 max_bytes: int = DEFAULT_MAX_BYTES,
                 native_repositories: frozenset[str] = frozenset()) -> None:
        self.cache, self.arch, self.max_bytes = cache, arch, max_bytes
        # An emulated node's exception (see `platform_arch`): repository paths, any registry.
        self.native_repositories = native_repositories
        self._refs_file = node_dir / "images.json"
        self._locks = cache / "locks"
        self._refs_lock = threading.Lock()  # pulls run in threads of one agent

    # --- what this node has ------------------------------------------------------------

    def _refs(self) -> dict[str, dict[str, Any]]:
        with contextlib.suppress(OSError, ValueError):
            return dict(json.loads(self._refs_file.read_text()))
        return {}

    def present(self, image: str, *, credentials: set[str] | frozenset[str] = frozenset()
                ) -> Image | None:
        """The image this node has for that reference (no registry asked), or None.

        As the kubelet 1.36 (KubeletEnsureSecretPulledImages, on by default): an image
        pulled with credentials is present only for a pod that presents one of the
        credentials it was pulled with (`credential_hashes`); one pulled anonymously is
        present for every pod."""
        reference = Reference.parse(image)
        entry = self._refs().get(reference.full)
        if entry is None:
            return None
        if not entry["anonymous"] and not credentials & set(entry["credentials"]):
            return None
        return self._load(reference, entry["digest"])

    def _remember(self, reference: Reference, digest: str, credential: str | None) -> None:
        with self._refs_lock:
            refs = self._refs()
            entry = refs.get(reference.full)
            if entry is None or entry["digest"] != digest:
                entry = {"digest": digest, "anonymous": False, "credentials": []}
            if credential is None:
                entry["anonymous"] = True
            elif credential not in entry["credentials"]:
                entry["credentials"].append(credential)
            refs[reference.full] = entry
            self._refs_file.parent.mkdir(parents=True, exist_ok=True)
            scratch = self._refs_file.with_name(f".images-{secrets.token_hex(4)}.json")
            scratch.write_text(json.dumps(refs, indent=1, sort_keys=True))
            scratch.replace(self._refs_file)

    def _entry(self, digest: str) -> Path:
        return self.cache / digest.replace(":", "-")

    def _load(self, reference: Reference, digest: str) -> Image | None:
        entry = self._entry(digest)
        with contextlib.suppress(OSError, ValueError, KeyError):
            meta = json.loads((entry / "image.json").read_text())
            return Image(reference=reference, digest=digest, rootfs=entry / "rootfs",
                         config=ImageConfig.from_blob(meta["config"]), size=int(meta["size"]))
        return None

    # --- the registry --------------------------------------------------------------------

    def _skopeo(self, argv: list[str], reference: Reference) -> bytes:
        try:
            done = subprocess.run(["skopeo", *argv], capture_output=True,
                                  timeout=SKOPEO_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PullError(_unknown(reference, str(exc))) from None
        if done.returncode != 0:
            raise PullError(_explain(reference, done.stderr.decode(errors="replace")))
        return done.stdout

    def platform_arch(self, reference: Reference) -> str:
        """The architecture whose manifest this node runs for `reference`.

        The node's own, except for the repositories an emulated node was told to run in
        this machine's architecture: buildah's RUN steps cannot run under QEMU user
        emulation, where its re-execution of itself fails (see the package docstring), so
        on the emulated arm64 node the builder image runs natively and buildah emulates only the
        RUN steps, as the local runner does. A real arm64 node runs its arm64 variant."""
        path = reference.repository.split("/", 1)[1]
        return HOST_ARCH if path in self.native_repositories else self.arch

    def resolve(self, image: str, *, authfile: Path | None = None) -> str:
        """The digest of this node's platform manifest for `image`, from the registry."""
        reference = Reference.parse(image)
        argv = ["inspect", "--raw", *self._tls(reference), *_auth(authfile),
                f"docker://{reference.full}"]
        raw = self._skopeo(argv, reference)
        document = json.loads(raw)
        if document.get("mediaType") in INDEX_TYPES or "manifests" in document:
            found = _select(document.get("manifests") or [], self.platform_arch(reference))
            if found is None:
                raise PullError(
                    f'rpc error: code = NotFound desc = failed to pull and unpack image '
                    f'"{reference.full}": no match for platform in manifest: not found')
            return str(found)
        return "sha256:" + hashlib.sha256(raw).hexdigest()

    def _tls(self, reference: Reference, flag: str = "--tls-verify") -> list[str]:
        return [f"{flag}=false"] if reference.insecure else []

    # --- pulling and unpacking ---------------------------------------------------------

    def pull(self, image: str, *, authfile: Path | None = None,
             credential: str | None = None) -> PullResult:
        """Resolve with the registry, then fetch and unpack that digest unless cached.
        `credential`: the hash of the credentials in `authfile` for this registry.

        Blocking (skopeo, umoci, a file lock): the kubelet calls it in a thread."""
        started = time.monotonic()
        reference = Reference.parse(image)
        digest = self.resolve(image, authfile=authfile)
        # Shared first: containers running on this digest hold it shared (`in_use`), here
        # or on another node of the machine, and an exclusive request would wait for them
        # all to end (a flow-run pod waits for the build pods that pull its image).
        with self._lock(digest, fcntl.LOCK_SH) as waited:
            found = self._load(reference, digest)
            if found is not None:
                os.utime(self._entry(digest))  # last used, for the LRU bound
        unpacked = False
        if found is None:
            with self._lock(digest, fcntl.LOCK_EX) as wait_s:
                waited += wait_s
                found = self._load(reference, digest)  # another agent may have won the race
                if found is None:
                    self._reap_scratch()
                    found = self._unpack(reference, digest, authfile)
                    unpacked = True
                os.utime(self._entry(digest))
        self._remember(reference, digest, credential if authfile is not None else None)
        self._evict(keep=digest)
        return PullResult(image=found, unpacked=unpacked,
                          seconds=time.monotonic() - started - waited)

    def _unpack(self, reference: Reference, digest: str, authfile: Path | None) -> Image:
        scratch = self.cache / f".pull-{secrets.token_hex(6)}"
        scratch.mkdir(parents=True)
        try:
            layout = scratch / "layout"
            self._skopeo(["copy", "--quiet", *self._tls(reference, "--src-tls-verify"),
                          *_auth(authfile, "--src-authfile"),
                          f"docker://{reference.repository}@{digest}", f"oci:{layout}:image"],
                         reference)
            index = json.loads((layout / "index.json").read_text())
            manifest = _blob(layout, index["manifests"][0]["digest"])
            config = _blob(layout, manifest["config"]["digest"])
            size = int(manifest["config"].get("size", 0)) + sum(
                int(layer.get("size", 0)) for layer in manifest.get("layers") or [])
            done = subprocess.run(["umoci", "raw", "unpack", "--image", f"{layout}:image",
                                   str(scratch / "rootfs")], capture_output=True,
                                  check=False)
            if done.returncode != 0:
                raise PullError(_unknown(reference, "unpacking: " + done.stderr.decode(
                    errors="replace").strip()))
            shutil.rmtree(layout)
            disk = _disk_bytes(scratch / "rootfs")
            (scratch / "image.json").write_text(json.dumps(
                {"reference": reference.full, "digest": digest, "size": size,
                 "disk_bytes": disk, "config": config}))
            entry = self._entry(digest)
            shutil.rmtree(entry, ignore_errors=True)  # a half-written one of a crashed run
            scratch.rename(entry)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        loaded = self._load(reference, digest)
        assert loaded is not None
        return loaded

    def _reap_scratch(self) -> None:
        """Scratch directories of pulls that died with their agent (long past any pull)."""
        for scratch in self.cache.glob(".pull-*"):
            with contextlib.suppress(OSError):
                if time.time() - scratch.stat().st_mtime > 2 * SKOPEO_TIMEOUT_S:
                    shutil.rmtree(scratch, ignore_errors=True)

    @contextlib.contextmanager
    def _lock(self, digest: str, mode: int) -> Iterator[float]:
        self._locks.mkdir(parents=True, exist_ok=True)
        path = self._locks / f"{digest.replace(':', '-')}.lock"
        started = time.monotonic()
        with path.open("a") as handle:
            fcntl.flock(handle, mode)
            yield time.monotonic() - started

    @contextlib.contextmanager
    def in_use(self, image: Image) -> Iterator[None]:
        """Held while a container runs on `image`: the cache never drops it meanwhile."""
        with self._lock(image.digest, fcntl.LOCK_SH):
            os.utime(self._entry(image.digest))
            yield

    def _evict(self, *, keep: str) -> None:
        """Drop least-recently-used digests until the cache is within its bound."""
        entries = []
        for entry in self.cache.glob("sha256-*"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                disk = int(json.loads((entry / "image.json").read_text())["disk_bytes"])
                entries.append((entry.stat().st_mtime, entry, disk))
        total = sum(disk for _, _, disk in entries)
        for _, entry, disk in sorted(entries, key=lambda e: e[0]):
            if total <= self.max_bytes:
                return
            digest = entry.name.replace("-", ":", 1)
            if digest == keep:
                continue
            path = self._locks / f"{entry.name}.lock"
            with path.open("a") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a container runs on it
                shutil.rmtree(entry, ignore_errors=True)
                total -= disk


def write_authfile(path: Path, auths: dict[str, Any]) -> Path:
    """A containers-auth.json readable by root only; the caller deletes it after use."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"auths": auths}, handle)
    return path


def credential_hashes(image: str, auths: dict[str, Any]) -> set[str]:
    """Hashes of the credentials `auths` (a docker config's "auths") holds for the image's
    registry: what the node remembers about who pulled an image, never the secret."""
    registry = Reference.parse(image).registry
    found = set()
    for key, value in auths.items():
        host = key.split("://", 1)[-1].split("/", 1)[0]
        if host == registry or (registry == "docker.io" and host.endswith("docker.io")):
            found.add(hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest())
    return found


def _auth(authfile: Path | None, flag: str = "--authfile") -> list[str]:
    return [flag, str(authfile)] if authfile is not None else []


def _select(manifests: list[dict[str, Any]], arch: str) -> str | None:
    """containerd's platform matcher for linux/<arch> (arm64: variant v8 or none)."""
    for manifest in manifests:
        platform = manifest.get("platform") or {}
        if platform.get("os") != "linux" or platform.get("architecture") != arch:
            continue
        if arch == "arm64" and platform.get("variant") not in (None, "", "v8"):
            continue
        return str(manifest["digest"])
    return None


def _blob(layout: Path, digest: str) -> dict[str, Any]:
    algorithm, _, value = digest.partition(":")
    return dict(json.loads((layout / "blobs" / algorithm / value).read_text()))


def _disk_bytes(root: Path) -> int:
    total = 0
    for directory, _, files in os.walk(root):
        for name in [*files, "."]:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
    return total


def _unknown(reference: Reference, why: str) -> str:
    return (f'rpc error: code = Unknown desc = failed to pull and unpack image '
            f'"{reference.full}": {why}')


def _explain(reference: Reference, stderr: str) -> str:
    """containerd's wording for skopeo's failure (not found, unauthorized, other)."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    why = lines[-1] if lines else "skopeo failed"
    if 'msg="' in why:
        why = why.split('msg="', 1)[1].rsplit('"', 1)[0].replace('\\"', '"')
    lower = why.lower()
    resolve = f'failed to resolve reference "{reference.full}"'
    if "manifest unknown" in lower or "name unknown" in lower:
        return (f'rpc error: code = NotFound desc = failed to pull and unpack image '
                f'"{reference.full}": {resolve}: {reference.full}: not found')
    if "unauthorized" in lower or "authentication required" in lower or "401" in lower:
        where = reference.tag or reference.digest
        scheme = "http" if reference.insecure else "https"
        path = reference.repository.split("/", 1)[1]
        return _unknown(reference, f"{resolve}: unexpected status from HEAD request to "
                                   f"{scheme}://{reference.registry}/v2/{path}/manifests/"
                                   f"{where}: 401 Unauthorized")
    return _unknown(reference, f"{resolve}: {why}")
