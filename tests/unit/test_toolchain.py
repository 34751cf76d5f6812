"""Unit tests for running a step inside the trixie toolchain: whole argv tuples, the bind
rules, the QEMU check, and the rootfs cache's key and atomic build (with a stand-in
mmdebstrap). The real rootfs is exercised by tests/integration/test_toolchain.py."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest

from multiarch import toolchain_rootfs
from multiarch.errors import ConfigurationError
from multiarch.handoff.layouts import export_step
from multiarch.plan import PlanPaths, plan_build
from multiarch.platforms import Platform
from multiarch.process import Step
from multiarch.request import BuildRequest
from multiarch.source import PinnedSource
from multiarch.toolchain import (
    ENTER_SCRIPT,
    HOST_CONFIG,
    TOOLCHAIN_PATH,
    Toolchain,
    emulation_problem,
    enter_argv,
    guess_binds,
    normalise_binds,
    wrap_step,
)
from multiarch.toolchain_rootfs import Recipe, cache_root, ensure_rootfs

TOOLCHAIN = Toolchain(rootfs="/cache/tc/k1/rootfs", scratch="/cache/tc/k1/mnt")
PYTHON = "/usr/bin/python3"
HEAD = (PYTHON, "-I", "-S", "-c", ENTER_SCRIPT, "/cache/tc/k1/rootfs", "/cache/tc/k1/mnt",
        "--size", "1g")
NETWORK = ("--bind-to", "/run/multiarch-toolchain/networks", "/run/containers/networks",
           "--bind-to", "/run/multiarch-toolchain/lock", "/run/lock")
COPIES = ("--copy", "/etc/resolv.conf", "--copy", "/etc/hosts")
HOST = tuple(arg for path in HOST_CONFIG for arg in ("--ro-bind-try", path))


def pairs(argv: tuple[str, ...]) -> list[tuple[str, str]]:
    return list(itertools.pairwise(argv))


def test_a_build_step_in_full() -> None:
    argv = ("buildah", "--root", "/w/storage", "--runroot", "/w/runroot", "build",
            "--isolation", "oci", "/ctx")
    wrapped = enter_argv(argv, toolchain=TOOLCHAIN, binds=["/w"], ro_binds=["/ctx"],
                         python=PYTHON)
    assert wrapped == (
        *HEAD, "--binfmt", "--ulimits", *COPIES,
        "--ro-bind", "/ctx", "--bind", "/tmp", "--bind", "/w",
        "--bind", "/var/tmp",
        *NETWORK, *HOST,
        "--", *argv,
    )  # fmt: skip


def test_no_value_ever_reaches_the_script() -> None:
    """The helper's code is one constant; paths and the step's argv are argv elements."""
    hostile = "/w/$(touch /pwned);'\"\n"
    wrapped = enter_argv(["sh", "-c", hostile], toolchain=TOOLCHAIN, binds=[hostile],
                         python=PYTHON)
    assert wrapped[4] is ENTER_SCRIPT
    assert wrapped[wrapped.index("--") + 1:] == ("sh", "-c", hostile)
    assert wrapped[:wrapped.index("--")].count(hostile) == 1  # one --bind element
    compile(ENTER_SCRIPT, "<toolchain helper>", "exec")
    assert f'"{TOOLCHAIN_PATH}"' in ENTER_SCRIPT


def test_options_switch_parts_off() -> None:
    wrapped = enter_argv(["true"], toolchain=TOOLCHAIN, python=PYTHON, binfmt=False,
                         ulimits=False, host_config=False, network_state=False,
                         scratch_size="64m")
    assert wrapped == (*HEAD[:-1], "64m", *COPIES, "--bind", "/tmp", "--bind", "/var/tmp",
                       "--", "true")


def test_defaults_to_the_running_python() -> None:
    import sys

    assert enter_argv(["true"], toolchain=TOOLCHAIN)[0] == sys.executable


def test_cwd_must_be_bound() -> None:
    wrapped = enter_argv(["ls"], toolchain=TOOLCHAIN, binds=["/w"], cwd="/w/sub",
                         python=PYTHON, host_config=False, network_state=False)
    assert wrapped[-4:] == ("--cwd", "/w/sub", "--", "ls")
    with pytest.raises(ConfigurationError, match="not bound"):
        enter_argv(["ls"], toolchain=TOOLCHAIN, cwd="/home/x")


def test_binds_are_normalised_parents_first() -> None:
    assert normalise_binds(["/w/a/b", "/w/a", "/x//y/", "/x/y", "/tmp/z", "/tmp"]) == [
        "/tmp", "/w/a", "/x/y"]
    # under the always-bound /tmp: nothing to add
    wrapped = enter_argv(["true"], toolchain=TOOLCHAIN, binds=["/tmp/pytest/w"],
                         python=PYTHON, host_config=False, network_state=False)
    assert "/tmp/pytest/w" not in wrapped


def test_read_only_inside_read_write_and_back() -> None:
    wrapped = enter_argv(["true"], toolchain=TOOLCHAIN, binds=["/w", "/ro/rw", "/both"],
                         ro_binds=["/w/ctx", "/ro", "/both"], python=PYTHON,
                         host_config=False, network_state=False)
    binds = wrapped[wrapped.index("/etc/hosts") + 1:wrapped.index("--")]
    assert binds == ("--bind", "/both", "--ro-bind", "/ro", "--bind", "/tmp", "--bind", "/w",
                     "--bind", "/ro/rw", "--bind", "/var/tmp", "--ro-bind", "/w/ctx")


def test_host_config_already_bound_is_not_bound_again() -> None:
    wrapped = enter_argv(["true"], toolchain=TOOLCHAIN, binds=["/etc/ssl"], python=PYTHON)
    assert ("--ro-bind-try", "/etc/ssl/certs") not in pairs(wrapped)


@pytest.mark.parametrize(("path", "message"), [
    ("relative/dir", "not an absolute path"),
    ("/", "refusing to bind"),
    ("/proc/sys", "mounts /proc"),
    ("/dev", "mounts /proc, /sys, /dev"),
    ("/sys/fs/cgroup", "itself"),
])
def test_bad_binds_are_refused(path: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        enter_argv(["true"], toolchain=TOOLCHAIN, binds=[path])


@pytest.mark.parametrize("rootfs", ["/cache/a,b/rootfs", "/cache/a:b/rootfs", "relative"])
def test_toolchain_paths_an_overlay_cannot_take(rootfs: str) -> None:
    with pytest.raises(ConfigurationError, match="rootfs path"):
        enter_argv(["true"], toolchain=Toolchain(rootfs=rootfs, scratch="/cache/mnt"))


def test_no_command() -> None:
    with pytest.raises(ConfigurationError, match="no command"):
        enter_argv([], toolchain=TOOLCHAIN)


def test_guess_binds_of_a_plan(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    (context / "docker").mkdir(parents=True)
    (context / "docker" / "Containerfile.prod").write_text("FROM scratch\n")
    paths = PlanPaths(checkout="/scratch/run1/checkout", storage_root="/scratch/run1/storage",
                      storage_runroot="/scratch/run1/runroot",
                      layout="/shared/run1/linux-arm64")
    request = BuildRequest.model_validate({
        "image": "127.0.0.1:5000/examples/hello:1.0", "platforms": ["linux/arm64"],
        "context": str(context), "containerfile": "docker/Containerfile.prod",
        "runner": {"storage_driver": "vfs"}})
    source = PinnedSource(kind="local", location=str(context), revision=None)
    plan = plan_build(request, source, Platform.parse("linux/arm64"), paths, run_id="run1")
    build = plan.steps[0]
    assert guess_binds(build.argv, build.env) == [
        "/scratch/run1/runroot", "/scratch/run1/storage", str(tmp_path / "ctx")]
    export = export_step(paths, image=plan.image, driver="vfs")
    # the layout's parent: skopeo makes the layout, a prepare step removes it
    assert guess_binds(export.argv) == ["/shared/run1", "/scratch/run1/runroot",
                                        "/scratch/run1/storage"]


def test_guess_binds_of_flags_and_env() -> None:
    argv = ("buildah", "build", "--authfile=/auth/dir/auth.json", "--secret",
            "id=tok,src=/secrets/tok", "-f", "/ctx/Containerfile", "--iidfile", "/out/iid",
            "relative", "/ctx")
    env = {"TMPDIR": "/w/tmp", "REGISTRY_AUTH_FILE": "/auth/other.json", "HOME": "/root"}
    assert guess_binds(argv, env) == ["/auth", "/ctx", "/out", "/secrets/tok", "/w/tmp"]
    named = ("buildah", "build", "--build-context", "extra=/srv/extra", "--build-context",
             "tools=docker-image://r.example.com/tools:1", "--ssh", "git=/keys/id_ed25519",
             "--ssh", "default")
    assert guess_binds(named) == ["/keys", "/srv/extra"]


def test_wrap_step_keeps_name_and_env() -> None:
    step = Step(name="build", argv=("buildah", "--root", "/w/s", "info"), env={"A": "1"})
    wrapped = wrap_step(step, toolchain=TOOLCHAIN, python=PYTHON, host_config=False,
                        network_state=False)
    assert wrapped.name == "build" and wrapped.env == {"A": "1"}
    assert wrapped.argv[-4:] == ("buildah", "--root", "/w/s", "info")
    assert ("--bind", "/w/s") in pairs(wrapped.argv)
    explicit = wrap_step(step, toolchain=TOOLCHAIN, binds=["/other"], python=PYTHON)
    assert ("--bind", "/w/s") not in pairs(explicit.argv)


def binfmt_entry(directory: Path, name: str, *, enabled: bool = True, flags: str = "POF"
                 ) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / f"qemu-{name}").write_text(
        f"{'enabled' if enabled else 'disabled'}\n"
        f"interpreter /usr/libexec/qemu-binfmt/{name}-binfmt-P\nflags: {flags}\noffset 0\n")
    return directory


def test_emulation_needs_the_fix_binary_flag(tmp_path: Path) -> None:
    good = binfmt_entry(tmp_path / "good", "aarch64")
    assert emulation_problem("aarch64", binfmt_dir=good) is None
    no_f = binfmt_entry(tmp_path / "nof", "aarch64", flags="PO")
    problem = emulation_problem("aarch64", binfmt_dir=no_f)
    assert problem and "no F (fix binary) flag" in problem and "aarch64-binfmt-P" in problem
    off = binfmt_entry(tmp_path / "off", "aarch64", enabled=False)
    assert "disabled" in str(emulation_problem("aarch64", binfmt_dir=off))
    assert "no qemu-riscv64 entry" in str(emulation_problem("riscv64", binfmt_dir=good))


def test_the_hosts_registration_if_any() -> None:
    """On this machine (Debian's qemu-user-static) the aarch64 entry has F, when there."""
    if Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
        assert emulation_problem("aarch64") is None


def test_recipe_key_follows_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    base = Recipe(arch="amd64")
    assert base.key() == Recipe(arch="amd64").key()
    assert len({base.key(), Recipe(arch="arm64").key(), Recipe(arch="amd64", suite="forky").key(),
                Recipe(arch="amd64", packages=("buildah",)).key()}) == 4
    # the package order does not matter, the recipe's version does
    assert Recipe(arch="amd64", packages=tuple(reversed(base.packages))).key() == base.key()
    before = base.key()
    monkeypatch.setattr(toolchain_rootfs, "RECIPE_VERSION", toolchain_rootfs.RECIPE_VERSION + 1)
    assert Recipe(arch="amd64").key() != before


def test_cache_root_is_outside_the_clone() -> None:
    assert cache_root({"XDG_CACHE_HOME": "/xdg", "HOME": "/home/u"}) == Path(
        "/xdg/multiarch-builder/toolchain")
    assert cache_root({"HOME": "/home/u"}) == Path("/home/u/.cache/multiarch-builder/toolchain")
    assert cache_root({"XDG_CACHE_HOME": "", "HOME": "/home/u"}) == Path(
        "/home/u/.cache/multiarch-builder/toolchain")


FAKE_MMDEBSTRAP = """#!/bin/sh
# a stand-in: the rootfs is the argument after the suite; $FAKE_MODE picks the outcome
while [ "$1" != "trixie" ]; do shift; done
target=$2
mkdir -p "$target/var/lib/dpkg" "$target/etc"
: > "$target/var/lib/dpkg/status"
echo "I: fake bootstrap into $target"
case "$FAKE_MODE" in
  fail) echo "E: cannot reach the mirror" >&2; exit 1;;
esac
exit 0
"""


@pytest.fixture
def fake_mmdebstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "mmdebstrap"
    tool.write_text(FAKE_MMDEBSTRAP)
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return tool


def test_a_build_is_renamed_into_place_once(fake_mmdebstrap: Path, tmp_path: Path,
                                           capfd: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    recipe = Recipe(arch="amd64")
    stale = cache / f".{recipe.key()}.partial-1"
    (stale / "rootfs").mkdir(parents=True)  # an interrupted build's leftover
    built = ensure_rootfs(cache_dir=cache, recipe=recipe)
    assert built.path == cache / recipe.key()
    assert built.rootfs.is_dir() and built.scratch.is_dir()
    assert not list(built.scratch.iterdir())
    conf = built.rootfs / toolchain_rootfs.CONTAINERS_CONF_PATH
    assert conf.read_text() == toolchain_rootfs.CONTAINERS_CONF
    manifest = json.loads((built.path / "toolchain.json").read_text())
    assert manifest["key"] == recipe.key() and manifest["suite"] == "trixie"
    assert manifest["build_seconds"] >= 0 and manifest["size_bytes"] > 0
    assert not stale.exists()
    err = capfd.readouterr().err
    assert err.count("toolchain: building the Debian trixie rootfs") == 1
    assert len(err.strip().splitlines()) == 1
    # cached: no second build, no stderr line
    fake_mmdebstrap.write_text("#!/bin/sh\nexit 99\n")
    assert ensure_rootfs(cache_dir=cache, recipe=recipe).path == built.path
    assert capfd.readouterr().err == ""


def test_a_failed_build_leaves_nothing(fake_mmdebstrap: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_MODE", "fail")
    cache = tmp_path / "cache"
    recipe = Recipe(arch="amd64")
    with pytest.raises(ConfigurationError, match="cannot reach the mirror"):
        ensure_rootfs(cache_dir=cache, recipe=recipe)
    assert [p.name for p in cache.iterdir()] == [f".{recipe.key()}.lock"]


def test_without_mmdebstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toolchain_rootfs.shutil, "which", lambda name: None)
    with pytest.raises(ConfigurationError, match="apt-get install mmdebstrap"):
        ensure_rootfs(cache_dir=tmp_path, recipe=Recipe(arch="amd64"))
