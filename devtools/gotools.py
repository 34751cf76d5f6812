"""Go tools the tests use (crane, regctl, our referrers registry), built once per input.

Each tool is built from a Go module (a pinned release from the Go module proxy, or our own
program under tests/tools/) into `${XDG_CACHE_HOME:-~/.cache}/multiarch-builder/gotools/
<name>-<key>/<name>`: outside the clone, so a CI run on a fresh clone of the same machine
reuses it, and keyed on everything that makes the binary (the module and version, or our
program's go.mod, go.sum and main.go; the Go version, GOOS/GOARCH, the build flags and
environment), so a changed pin or a new Go builds another one. Go's own build cache
(~/.cache/go-build) and module cache are left where they are and shared between runs, so
even a new key rebuilds only what changed.

A build writes to a `.partial` directory next to the target and renames the binary into
place, under a lock: an interrupted build never leaves a broken binary, and two sessions
starting at once build it once. `python -m devtools gotools` builds (or finds) them all.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from multiarch.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parents[1]
GO_INSTALL_HINT = (
    "install Go 1.26 (`go`, e.g. from https://go.dev/dl/ into /usr/local/go, with "
    "/usr/local/go/bin on PATH)"
)
FALLBACK_GO = Path("/usr/local/go/bin/go")
BUILD_FLAGS = ("-trimpath", "-buildvcs=false", "-ldflags=-s -w")
# Fixed so the user's environment cannot change a binary behind its key: static binaries,
# exactly the Go that `go env GOVERSION` reports, no go.work or GOFLAGS from outside.
BUILD_ENV = {"CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOWORK": "off", "GOFLAGS": ""}
KEYED_FILES = ("go.mod", "go.sum", "main.go")
STALE_AFTER_S = 30 * 24 * 3600  # other keys of a tool, unused this long, are removed
_ERROR_TAIL_LINES = 30


class GoToolError(ConfigurationError):
    """Go is missing, or a tool did not build; the message says which and why."""


@dataclass(frozen=True)
class Tool:
    """A command built from a Go package: `package@version` from the module proxy, or the
    main package of a module of ours (`source`, built with its go.mod and go.sum)."""

    name: str
    package: str | None = None
    version: str | None = None
    source: Path | None = None

    def describe(self) -> str:
        if self.source is not None:
            return f"{self.name} ({self.source.relative_to(REPO_ROOT)})"
        return f"{self.name} {self.version}"

    def inputs(self) -> bytes:
        if self.source is not None:
            return b"".join(
                name.encode() + b"\0" + (self.source / name).read_bytes() + b"\0"
                for name in KEYED_FILES
            )
        return f"{self.package}@{self.version}".encode()


TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool(
            "crane", package="github.com/google/go-containerregistry/cmd/crane", version="v0.22.1"
        ),
        Tool("regctl", package="github.com/regclient/regclient/cmd/regctl", version="v0.11.7"),
        Tool("referrers_registry", source=REPO_ROOT / "tests" / "tools" / "referrers_registry"),
    )
}


@dataclass(frozen=True)
class GoEnv:
    go: Path
    version: str  # go1.26.8
    goos: str
    goarch: str


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "multiarch-builder" / "gotools"


def find_go() -> Path:
    """The `go` command (PATH, then /usr/local/go/bin); a clear error when there is none."""
    found = shutil.which("go")
    if found:
        return Path(found)
    if FALLBACK_GO.exists():
        return FALLBACK_GO
    raise GoToolError(
        f"the test tools (crane, regctl, the referrers registry) are built "
        f"with Go, and `go` was not found: {GO_INSTALL_HINT}"
    )


def go_env(go: Path | None = None) -> GoEnv:
    go = go or find_go()
    done = subprocess.run(
        [str(go), "env", "GOVERSION", "GOOS", "GOARCH"],
        capture_output=True,
        text=True,
        env=_build_env(),
        check=False,
    )
    lines = done.stdout.split()
    if done.returncode != 0 or len(lines) != 3:
        raise GoToolError(
            f"`{go} env` failed ({done.returncode}): {done.stderr.strip()}; {GO_INSTALL_HINT}"
        )
    return GoEnv(go=go, version=lines[0], goos=lines[1], goarch=lines[2])


def cache_key(tool: Tool, env: GoEnv) -> str:
    """Everything that makes the binary: any change means another one."""
    digest = hashlib.sha256(tool.inputs())
    for part in (
        env.version,
        env.goos,
        env.goarch,
        *BUILD_FLAGS,
        *(f"{key}={value}" for key, value in sorted(BUILD_ENV.items())),
    ):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()[:16]


def tool_path(name: str, env: GoEnv | None = None) -> Path:
    """Where the binary of `name` is (or would be) cached for the current Go."""
    tool = _tool(name)
    env = env or go_env()
    return cache_root() / f"{tool.name}-{cache_key(tool, env)}" / tool.name


def ensure_tool(name: str, *, log: bool = True) -> Path:
    """The binary of `name` ("crane", "regctl", "referrers_registry"), built on a miss."""
    tool = _tool(name)
    env = go_env()
    target = tool_path(name, env)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with _locked(target.parent / ".lock"):
            if not target.exists():  # another session may have built it meanwhile
                _build(tool, env, target, log=log)
                _prune(tool, keep=target.parent)
    with contextlib.suppress(OSError):
        os.utime(target.parent)  # last used: what _prune goes by
    return target


def ensure_all(*, log: bool = True) -> dict[str, Path]:
    return {name: ensure_tool(name, log=log) for name in TOOLS}


def _tool(name: str) -> Tool:
    try:
        return TOOLS[name]
    except KeyError:
        raise GoToolError(f"unknown Go tool {name!r}; known: {', '.join(TOOLS)}") from None


def _build_env() -> dict[str, str]:
    return {**os.environ, **BUILD_ENV}


def _build(tool: Tool, env: GoEnv, target: Path, *, log: bool) -> None:
    partial = target.parent / f".partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    for stale in target.parent.glob(".partial-*"):  # left by an interrupted build
        shutil.rmtree(stale, ignore_errors=True)
    partial.mkdir()
    if log:
        print(
            f"building {tool.describe()} with {env.version} (cold: about a minute; "
            f"cached as {target})",
            file=sys.stderr,
            flush=True,
        )
    build_env = _build_env()
    if tool.source is not None:
        argv = [str(env.go), "build", *BUILD_FLAGS, "-o", str(partial / tool.name), "."]
        cwd = tool.source
    else:
        argv = [str(env.go), "install", *BUILD_FLAGS, f"{tool.package}@{tool.version}"]
        build_env["GOBIN"] = str(partial)
        cwd = partial
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv, cwd=cwd, env=build_env, capture_output=True, text=True, check=False
        )
        built = partial / tool.name
        if done.returncode != 0 or not built.is_file():
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-_ERROR_TAIL_LINES:])
            raise GoToolError(
                f"building {tool.describe()} failed (exit {done.returncode}): "
                f"{' '.join(argv)}\n{tail}"
            )
        os.replace(built, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    seconds = time.monotonic() - started
    (target.parent / "build-seconds").write_text(f"{seconds:.1f}\n")
    if log:
        print(f"built {tool.describe()} in {seconds:.0f} s", file=sys.stderr, flush=True)


def _prune(tool: Tool, *, keep: Path) -> None:
    """Other keys of this tool (an old pin, an old Go) unused for a month: gone. Recent
    ones stay, so branches pinning different versions on one machine do not thrash."""
    now = time.time()
    for old in cache_root().glob(f"{tool.name}-*"):
        if old == keep or not old.is_dir():
            continue
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime > STALE_AFTER_S:
                shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main() -> int:
    """`python -m devtools gotools`: build what is missing, print `name path` lines."""
    for name, path in ensure_all().items():
        print(f"{name} {path}")
    return 0
