"""The builder image every pod runs: multi-arch, and its tools work on each architecture.

It is built by the project's own flow (devtools/builder_image.py) and restored into the
session registry by the `builder_image` fixture; these tests look at what a pod would get.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.busybox import ELF_MACHINES, elf_machine
from tests.integration.conftest import read_image_file, skopeo_raw

pytestmark = pytest.mark.integration

PLATFORMS = {"amd64": "linux/amd64", "arm64": "linux/arm64/v8"}
UNAME = {"amd64": "x86_64", "arm64": "aarch64"}


def platform_manifests(reference: str) -> dict[str, str]:
    """`os/arch[/variant]` -> manifest digest, as the index lists them."""
    index = json.loads(skopeo_raw(reference))
    found = {}
    for entry in index["manifests"]:
        platform = entry["platform"]
        name = "/".join(
            part for part in (platform["os"], platform["architecture"], platform.get("variant"))
            if part
        )
        found[name] = entry["digest"]
    return found


def test_index_lists_amd64_and_arm64_v8_with_native_buildah(
    builder_image: str, tmp_path: Path
) -> None:
    manifests = platform_manifests(builder_image)
    assert set(manifests) == set(PLATFORMS.values())
    repository = builder_image.rsplit(":", 1)[0]
    for arch, platform in PLATFORMS.items():
        scratch = tmp_path / arch
        scratch.mkdir()
        buildah = read_image_file(
            f"{repository}@{manifests[platform]}", "/usr/bin/buildah", scratch=scratch
        )
        assert elf_machine(buildah[:20]) == ELF_MACHINES[arch], platform


@pytest.fixture(scope="module")
def containers(builder_image: str, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[dict[str, list[str]]]:
    """One working container per platform, in a private buildah store: the argv prefix
    that runs a command in it (`buildah run --isolation chroot`, arm64 through QEMU)."""
    root = tmp_path_factory.mktemp("builder-store")
    store = ["buildah", "--root", str(root / "root"), "--runroot", str(root / "run"),
             "--storage-driver", "overlay"]
    prefixes: dict[str, list[str]] = {}
    try:
        for arch in PLATFORMS:
            name = subprocess.run(
                [*store, "from", "--quiet", "--tls-verify=false", "--platform",
                 f"linux/{arch}", "--name", f"builder-{arch}", builder_image],
                check=True, capture_output=True, text=True, timeout=600,
            ).stdout.strip()
            prefixes[arch] = [*store, "run", "--isolation", "chroot", name, "--"]
        yield prefixes
    finally:
        subprocess.run([*store, "rm", "--all"], capture_output=True, check=False, timeout=120)
        subprocess.run([*store, "rmi", "--all", "--force"], capture_output=True, check=False,
                       timeout=120)
        subprocess.run(["umount", "-R", str(root / "root" / "overlay")], capture_output=True,
                       check=False)


@pytest.mark.parametrize("arch", list(PLATFORMS))
def test_tools_run_inside_the_image(containers: dict[str, list[str]], arch: str) -> None:
    def run(*argv: str) -> str:
        done = subprocess.run([*containers[arch], *argv], capture_output=True, text=True,
                              timeout=600, check=False)
        assert done.returncode == 0, f"{argv} in {arch}: {done.stderr[-2000:]}"
        return done.stdout

    assert run("uname", "-m").strip() == UNAME[arch]
    assert "multiarch" in run("multiarch", "--help")
    assert run("buildah", "--version").startswith("buildah version 1.28")
    assert run("skopeo", "--version").startswith("skopeo version 1.9")
    assert run("git", "--version").startswith("git version")
    # The project comes from its wheel, not from a source tree, and its storage defaults.
    location = run("python3", "-c", "import multiarch; print(multiarch.__file__)")
    assert location.startswith("/opt/venv/lib/python3.11/site-packages/multiarch/")
    storage = run("cat", "/etc/containers/storage.conf")
    assert 'driver = "overlay"' in storage


def test_prefect_entrypoint_resolves_from_the_workdir(containers: dict[str, list[str]]) -> None:
    """prefect.yaml's kubernetes deployment: WORKDIR /opt/multiarch-builder, entrypoint
    flows/build.py:build_multiarch_image, which must be the installed package's flow."""
    done = subprocess.run(
        [*containers["amd64"], "python3", "-c",
         "from prefect.flows import load_flow_from_entrypoint; "
         "print(load_flow_from_entrypoint('flows/build.py:build_multiarch_image').name)"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "build-multiarch-image"
