"""Local runner decisions that need no tools: emulation preflight, paths, mount cleanup."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

import multiarch.runners.local.runner as local
from multiarch.emulation import EmulationStatus
from multiarch.errors import ConfigurationError
from multiarch.platforms import Platform
from multiarch.request import BuildRequest, RunnerOptions
from multiarch.runclaim import mounts_under
from multiarch.workspace import run_dirs

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "hello")


def request(*platforms: str, allow_emulation: bool = False, **runner) -> BuildRequest:
    return BuildRequest(
        image="127.0.0.1:5000/x/y:z",
        platforms=platforms,
        context=EXAMPLE,
        allow_emulation=allow_emulation,
        runner=RunnerOptions(**runner),
    )


@pytest.fixture
def amd64_host(monkeypatch):
    monkeypatch.setattr(local, "host_architecture", lambda: "amd64")
    monkeypatch.setattr(local.shutil, "which", lambda tool: f"/usr/bin/{tool}")


def test_native_platform_needs_no_emulation(amd64_host):
    notes = local.preflight(request("linux/amd64"))
    assert notes[0] == "linux/amd64: native on this amd64 host"
    assert re.fullmatch(r"toolchain: buildah \d+\.\d+\.\d+, skopeo \d+\.\d+\.\d+", notes[1])


def test_foreign_platform_without_permission_is_refused(amd64_host):
    with pytest.raises(ConfigurationError) as error:
        local.preflight(request("linux/amd64", "linux/arm64"))
    assert "linux/arm64 cannot run natively on this amd64 host" in str(error.value)
    assert "--allow-emulation" in str(error.value)


def test_foreign_platform_with_emulation_but_no_binfmt_is_refused(amd64_host, monkeypatch):
    monkeypatch.setattr(
        local,
        "emulation_status",
        lambda arch: EmulationStatus(
            arch=arch, available=False, reason="binfmt_misc is not mounted: run make up"
        ),
    )
    with pytest.raises(ConfigurationError) as error:
        local.preflight(request("linux/arm64", allow_emulation=True))
    assert "needs QEMU emulation, but binfmt_misc is not mounted" in str(error.value)


def test_foreign_platform_with_emulation_is_flagged(amd64_host, monkeypatch):
    monkeypatch.setattr(
        local,
        "emulation_status",
        lambda arch: EmulationStatus(arch=arch, available=True, reason=""),
    )
    notes = local.preflight(request("linux/amd64", "linux/arm64", allow_emulation=True))
    assert notes[1] == "linux/arm64: emulated with QEMU on this amd64 host"


def test_missing_tools_are_named(monkeypatch):
    monkeypatch.setattr(local.shutil, "which", lambda tool: None if tool == "skopeo" else "/x")
    with pytest.raises(ConfigurationError, match="missing tools for the local runner: skopeo"):
        local.preflight(request("linux/amd64"))


def test_run_dirs_keep_storage_local_and_layouts_on_the_shared_volume(tmp_path):
    wanted = request("linux/amd64", work_dir=str(tmp_path / "w"),
                     shared_dir=str(tmp_path / "nfs"))
    dirs = run_dirs(wanted, run_id="r1")
    paths = local.platform_paths(wanted, dirs, Platform.parse("linux/arm/v7"))
    assert paths.layout == str(tmp_path / "nfs" / "r1" / "linux-arm-v7")
    assert paths.digest_file is None
    assert paths.storage_root == str(
        tmp_path / "w" / "builds" / "r1" / "linux-arm-v7" / "storage" / "root"
    )


def test_registry_handoff_keeps_the_layout_in_the_build_scratch(tmp_path):
    wanted = request("linux/amd64", work_dir=str(tmp_path / "w"),
                     shared_dir=str(tmp_path / "nfs")).model_copy(update={"handoff": "registry"})
    dirs = run_dirs(wanted, run_id="r1")
    paths = local.platform_paths(wanted, dirs, Platform.parse("linux/arm64"))
    scratch = tmp_path / "w" / "builds" / "r1" / "linux-arm64"
    assert paths.layout == str(scratch / "layout")
    assert paths.digest_file == str(scratch / "digest")


def test_shared_dir_defaults_under_the_work_dir(tmp_path):
    dirs = run_dirs(request("linux/amd64", work_dir=str(tmp_path)), run_id="r2")
    assert dirs.run_shared == tmp_path / "shared" / "r2"


def test_mounts_under_finds_nested_mounts_deepest_first(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw - ext4 /dev/vda rw\n"
        "90 22 8:1 /x /w/builds/r/storage/root/overlay rw - ext4 /dev/vda rw\n"
        "91 90 0:5 / /w/builds/r/storage/root/overlay/abc/merged rw - overlay overlay rw\n"
        "92 22 8:1 /y /w/builds/other rw - ext4 /dev/vda rw\n"
        "93 22 8:1 /z /w/builds/r\\040space rw - ext4 /dev/vda rw\n"
    )
    assert mounts_under(Path("/w/builds/r"), mountinfo) == [
        "/w/builds/r/storage/root/overlay/abc/merged",
        "/w/builds/r/storage/root/overlay",
    ]
    assert mounts_under(Path("/w/builds/r space"), mountinfo) == ["/w/builds/r space"]


def test_the_debian13_toolchain_is_for_the_local_runner_only():
    with pytest.raises(ValueError, match="toolchain: debian13 is for the local runner"):
        RunnerOptions(kind="kubernetes", toolchain="debian13")
    assert RunnerOptions(toolchain="debian13").toolchain == "debian13"


def test_toolchain_steps_bind_the_work_dir_writable_and_named_paths_read_only(
        tmp_path, monkeypatch):
    from multiarch import toolchain
    from multiarch.process import Step
    from multiarch.runners.local import toolchain_steps
    from multiarch.toolchain import ENTER_SCRIPT, Toolchain

    monkeypatch.setattr(toolchain, "DEFAULT_BINDS", ())  # else tmp_path is under /tmp's bind

    work, context, auth = tmp_path / "work", tmp_path / "ctx", tmp_path / "auth.json"
    for directory in (work, context):
        directory.mkdir()
    auth.write_text("{}")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
    steps = [
        Step(name="fetch", argv=("sh", "-c", "git fetch", "fetch", "file:///srv/repo")),
        Step(name="build", argv=("buildah", "--root", f"{work}/s/root", "build",
                                 "--file", f"{context}/Containerfile", str(context))),
    ]
    fetch, build = toolchain_steps.in_toolchain(
        steps, toolchain=Toolchain(rootfs="/tc/rootfs", scratch="/tc/mnt"),
        writable=[str(work)], emulated=False)
    assert fetch == steps[0]  # git runs on the host, with the host's repository and helper
    assert ENTER_SCRIPT in build.argv
    options = list(build.argv[:build.argv.index("--")])
    assert build.argv[build.argv.index("--") + 1:] == steps[1].argv
    pairs = set(itertools.pairwise(options))
    assert ("--bind", str(work)) in pairs
    assert ("--ro-bind", str(context)) in pairs  # the context: read, never written
    assert ("--ro-bind", str(auth)) in pairs  # the same logins as our registry client
    assert ("--ro-bind", f"{work}/s") not in pairs and "--binfmt" not in options
