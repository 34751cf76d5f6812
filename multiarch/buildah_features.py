"""Containerfile syntax the builder's buildah does not have, refused before any build.

A buildah too old for a line fails only when the build reaches it, on every platform, and
not always clearly (buildah 1.28 reads `COPY <<EOF /f` as a file named `<<EOF`), or worse
ignores it: 1.39's `COPY --exclude` keeps files BuildKit would exclude, so an image would
ship what its author excluded. So each line is checked against the version that will run
the build, and the refusal names the line and the buildah release that has the feature.

Versions: heredocs came in buildah 1.35, `COPY --parents` in 1.40, `COPY/ADD --link` in
1.41 (buildah's changelog); `ADD --checksum` and `RUN --network` are refused by 1.28 and
work in 1.39 (Debian 13), measured here, so 1.39 is the release named for them.
SHELL, HEALTHCHECK and ONBUILD exist only in Docker's image config; an OCI build (the
default) would silently drop them, so there they are refused, naming `--format docker`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from multiarch.containerfile import numbered_instructions, stages
from multiarch.errors import ConfigurationError
from multiarch.process import capture

Version = tuple[int, int, int]
_VERSION = re.compile(r"buildah version (\d+)\.(\d+)\.(\d+)")
_HEREDOC_START = re.compile(r"<<-?[\"']?[A-Za-z_]")
VERSION_TIMEOUT_S = 30.0
# `FROM --platform=` values that name the platform being built anyway.
TARGET_PLATFORM = ("$TARGETPLATFORM", "${TARGETPLATFORM}")
# The buildah of Debian 13 (trixie), the local runner's `--toolchain debian13`.
DEBIAN13_BUILDAH: Version = (1, 39, 0)


@dataclass(frozen=True)
class Feature:
    name: str
    since: Version | None  # None: no buildah release does what BuildKit does
    applies: Callable[[str, str], bool]  # (INSTRUCTION, arguments) -> uses it
    why: str = ""  # for `since=None`: what goes wrong, and the fix
    docker_has_it: bool = False  # a docker-format build (--format docker) keeps it


def _flags(rest: str) -> set[str]:
    names = set()
    for word in rest.split():
        if not word.startswith("--"):
            break
        names.add(word[2:].split("=", 1)[0].lower())
    return names


def _has_flag(keywords: tuple[str, ...], flag: str) -> Callable[[str, str], bool]:
    return lambda keyword, rest: keyword in keywords and flag in _flags(rest)


FEATURES = (
    Feature("heredocs (<<EOF)", (1, 35, 0),
            lambda k, rest: k in ("RUN", "COPY", "ADD") and bool(_HEREDOC_START.search(rest))),
    Feature("ADD --checksum", (1, 39, 0), _has_flag(("ADD",), "checksum")),
    Feature("RUN --network", (1, 39, 0), _has_flag(("RUN",), "network")),
    Feature("COPY --parents", (1, 40, 0), _has_flag(("COPY", "ADD"), "parents")),
    Feature("COPY --link", (1, 41, 0), _has_flag(("COPY", "ADD"), "link")),
    Feature("COPY --exclude", None, _has_flag(("COPY", "ADD"), "exclude"),
            "buildah accepts it but keeps files BuildKit would exclude; no buildah release "
            "has BuildKit's meaning: use an ignore file (.containerignore) instead"),
    # Docker's image config has these, OCI's has not: in an OCI build buildah drops them,
    # and a SHELL (`-o pipefail`) does not even reach the RUN steps after it.
    *(Feature(keyword, None, lambda k, _, word=keyword: k == word,
              f"the OCI image config has no {keyword}: buildah drops it from an OCI build"
              + (" and runs the RUN steps after it with /bin/sh -c" if keyword == "SHELL"
                 else "") + f"; build with --format docker to keep it, or {fix}",
              docker_has_it=True)
      for keyword, fix in (
          ("SHELL", 'write the shell into each RUN (RUN ["bash", "-o", "pipefail", "-c", '
                    '"..."])'),
          ("HEALTHCHECK", "remove it (Kubernetes runs probes, not HEALTHCHECK)"),
          ("ONBUILD", "remove it and write those steps into the images built FROM this "
                      "one"))),
)


def text_of(version: Version) -> str:
    return ".".join(str(part) for part in version)


def unsupported(text: str, version: Version, *, path: str = "Containerfile",
                image_format: str = "oci") -> list[str]:
    """One line per use of a feature `version` lacks, naming the line and the fix."""
    found = []
    for number, keyword, rest in numbered_instructions(text):
        for feature in FEATURES:
            if feature.since is not None and version >= feature.since:
                continue
            if feature.docker_has_it and image_format == "docker":
                continue
            if feature.applies(keyword, rest):
                found.append(_refusal(feature, path=path, number=number, version=version))
    return found


def _refusal(feature: Feature, *, path: str, number: int, version: Version) -> str:
    where = f"{path} line {number}: {feature.name}"
    if feature.since is None:
        return f"{where}: {feature.why}"
    fix = (f"; --toolchain debian13 builds with buildah {text_of(DEBIAN13_BUILDAH)}"
           if feature.since <= DEBIAN13_BUILDAH and version < DEBIAN13_BUILDAH else "")
    return (f"{where} needs buildah {text_of(feature.since)} or later, the builder has "
            f"{text_of(version)}{fix}")


@functools.cache
def local_buildah_version(toolchain: str = "host") -> Version:
    """The version of the `buildah` the local runner runs with `toolchain` (host or
    debian13: the rootfs's, read from its dpkg database, built on a miss)."""
    if toolchain != "host":
        return _toolchain_versions()[0]
    done = capture(["buildah", "--version"], what="asking buildah its version",
                   timeout_s=VERSION_TIMEOUT_S)
    match = _VERSION.search(done.stdout) if done.ok else None
    if match is None:
        raise ConfigurationError(f"buildah --version: cannot read a version ({done.stdout!r})")
    return int(match[1]), int(match[2]), int(match[3])


def _toolchain_versions() -> tuple[Version, str]:
    """(buildah's version, skopeo's) in the Debian 13 toolchain rootfs."""
    from multiarch.toolchain_rootfs import ensure_rootfs, upstream_version

    versions = ensure_rootfs().manifest.get("versions")
    versions = versions if isinstance(versions, dict) else {}
    buildah = upstream_version(str(versions.get("buildah", "")))
    skopeo = upstream_version(str(versions.get("skopeo", "")))
    if buildah is None or skopeo is None:
        raise ConfigurationError(
            f"toolchain: the debian13 rootfs records no buildah/skopeo version ({versions}): "
            "delete its cache directory (~/.cache/multiarch-builder/toolchain) to rebuild it")
    return buildah, text_of(skopeo)


@functools.cache
def local_tools(toolchain: str = "host") -> str:
    """`buildah 1.28.2, skopeo 1.9.3`: what the local runner builds and exports with."""
    if toolchain != "host":
        buildah, skopeo = _toolchain_versions()
        return f"buildah {text_of(buildah)}, skopeo {skopeo} (Debian 13 toolchain)"
    done = capture(["skopeo", "--version"], what="asking skopeo its version",
                   timeout_s=VERSION_TIMEOUT_S)
    skopeo = done.stdout.split()[2] if done.ok and len(done.stdout.split()) > 2 else "?"
    return f"buildah {text_of(local_buildah_version())}, skopeo {skopeo}"


def platform_pitfalls(text: str, version: Version, *, path: str,
                      build_args: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(refusals, notes) for `FROM --platform`, as each buildah treats it (measured).

    buildah 1.28 ignores the flag: the stage runs for the target platform, emulated for a
    foreign one, and its result is still that platform's (a note). buildah 1.39 honours it,
    but a later `FROM IMAGE` of an image an earlier stage pulled with `--platform` gets
    that stage's copy (buildah issue 4742): an arm64 image of amd64 binaries, refused.
    """
    found = stages(text, build_args)
    aliases = {stage.alias for stage in found if stage.alias}
    refusals: list[str] = []
    notes: list[str] = []
    for stage in found:
        if stage.platform in (None, *TARGET_PLATFORM) or stage.base in aliases:
            continue
        if version < DEBIAN13_BUILDAH:
            notes.append(
                f"file: {path} line {stage.line}: buildah {text_of(version)} ignores FROM "
                f"--platform={stage.platform}: that stage runs for each target platform "
                "(under QEMU for a foreign one); --toolchain debian13 runs it natively")
            continue
        for later in found:
            if later.line > stage.line and later.platform is None and later.base == stage.base:
                refusals.append(
                    f"{path} line {later.line}: FROM {later.base} after line {stage.line}'s "
                    f"FROM --platform={stage.platform} of the same image: buildah "
                    f"{text_of(version)} gives it line {stage.line}'s platform's image "
                    "(buildah issue 4742), so each platform's image would hold that "
                    f"platform's binaries; write FROM --platform=$TARGETPLATFORM {later.base}")
    return refusals, notes


def check_supported(text: str, version: Version, *, path: str,
                    build_args: Mapping[str, str] | None = None,
                    image_format: str = "oci") -> list[str]:
    """ConfigurationError listing every line this buildah cannot build right; else notes."""
    pitfalls, notes = platform_pitfalls(text, version, path=path, build_args=build_args or {})
    refused = [*unsupported(text, version, path=path, image_format=image_format), *pitfalls]
    if refused:
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        raise ConfigurationError(f"file: {refused[0]}{more}")
    return [f"file: every instruction is one buildah {text_of(version)} builds", *notes]
