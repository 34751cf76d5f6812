"""The Debian 13 toolchain, for real: buildah 1.39 and skopeo 1.18 from the cached trixie
rootfs (multiarch/toolchain_rootfs.py; built on a miss, about a minute), run through
multiarch/toolchain.py and `run_step` exactly as a plan step would be.

Every test checks the host afterwards: /proc/self/mountinfo has no new entry, no process
names the test's directories, and no process anywhere still has a mount namespace built on
the toolchain's scratch directory (a namespace lives as long as one of its processes).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from multiarch.errors import StepFailed
from multiarch.process import Step, run_step
from multiarch.toolchain import Toolchain, emulation_problem, wrap_step
from multiarch.toolchain_rootfs import ensure_rootfs
from tests.faults.hoststate import processes_with
from tests.sessions import REPO_ROOT, Playground

pytestmark = pytest.mark.integration

HEREDOC_CONTAINERFILE = """\
FROM {base}
RUN <<EOF
uname -m > /built-arch
echo "written by a heredoc" >> /built-arch
EOF
COPY <<EOF /greeting
hello from COPY <<EOF
EOF
"""


@pytest.fixture(scope="module")
def toolchain() -> Toolchain:
    return ensure_rootfs().toolchain()


def host_mounts() -> set[str]:
    return set(Path("/proc/self/mountinfo").read_text().splitlines())


def namespaces_on(scratch: str) -> list[str]:
    """Processes whose mount table holds the toolchain's overlay (a live namespace)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if f"upperdir={scratch}/upper" in (proc / "mountinfo").read_text():
                found.append(f"{proc.name}: {(proc / 'cmdline').read_bytes()[:200]!r}")
        except OSError:
            continue
    return found


def settle(check: object, wait_s: float = 10.0) -> list[str]:
    """`check()` once it is empty, or what it still reports after `wait_s`."""
    assert callable(check)
    end = time.monotonic() + wait_s
    while (left := check()) and time.monotonic() < end:
        time.sleep(0.1)
    return left


@pytest.fixture
def work(toolchain: Toolchain) -> Iterator[Path]:
    """A work dir outside /tmp (so it is bound on its own, not through /tmp), and the host
    checks once the test is done."""
    (REPO_ROOT / ".local").mkdir(exist_ok=True)
    path = REPO_ROOT / ".local" / f"toolchain-test-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    before = host_mounts()
    try:
        yield path
        assert settle(lambda: processes_with(str(path))) == []
        assert settle(lambda: namespaces_on(toolchain.scratch)) == []
        assert host_mounts() - before == set()
        assert not list(Path(toolchain.scratch).iterdir())
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run(step: Step, toolchain: Toolchain, *, binds: list[str], timeout_s: float = 300
        ) -> list[str]:
    lines: list[str] = []
    wrapped = wrap_step(step, toolchain=toolchain, binds=binds)
    run_step(wrapped, emit=lines.append, deadline=time.monotonic() + timeout_s,
             label="toolchain")
    return lines


def buildah(work: Path, *args: str) -> tuple[str, ...]:
    return ("buildah", "--root", f"{work}/storage", "--runroot", f"{work}/runroot",
            "--storage-driver", "vfs", *args)


def build_step(work: Path, context: Path, platform: str, *extra: str,
               tag: str = "localhost/toolchain-test:latest") -> Step:
    (work / "runroot" / "buildah-tmp").mkdir(parents=True, exist_ok=True)  # as the runner does
    argv = buildah(work, "build", "--isolation", "oci", "--runtime", "runc",
                   "--runtime-flag", f"root={work}/runroot/runc", "--platform", platform,
                   "--tls-verify=false", *extra, "--tag", tag, str(context))
    return Step(name="build", argv=argv, env={"BUILDAH_ISOLATION": "oci",
                                              "TMPDIR": f"{work}/runroot/buildah-tmp"})


def context_with(work: Path, text: str) -> Path:
    context = work / "context"
    context.mkdir(exist_ok=True)
    (context / "Containerfile").write_text(text)
    return context


def test_tool_versions(toolchain: Toolchain, work: Path) -> None:
    buildah_out = run(Step(name="version", argv=("buildah", "--version")), toolchain,
                      binds=[str(work)])
    skopeo_out = run(Step(name="version", argv=("skopeo", "--version")), toolchain,
                     binds=[str(work)])
    assert re.fullmatch(r"buildah version 1\.39\.\d+ .*", buildah_out[-1]), buildah_out
    assert re.fullmatch(r"skopeo version 1\.18\.\d+", skopeo_out[-1]), skopeo_out
    # and the host's own are the old ones the toolchain replaces
    host = subprocess.run(["buildah", "--version"], capture_output=True, text=True, check=True)
    assert not host.stdout.startswith("buildah version 1.39")


@pytest.mark.parametrize(("platform", "machine", "arch"), [
    ("linux/amd64", "x86_64", "amd64"),
    ("linux/arm64", "aarch64", "arm64"),
])
def test_heredoc_build_and_read_back(toolchain: Toolchain, work: Path, playground: Playground,
                                     platform: str, machine: str, arch: str) -> None:
    if arch == "arm64":
        assert emulation_problem("aarch64") is None
    context = context_with(work, HEREDOC_CONTAINERFILE.format(base=playground.base))
    image = "localhost/toolchain-test:latest"
    output = run(build_step(work, context, platform, tag=image), toolchain, binds=[str(work)])
    assert any("Successfully tagged" in line for line in output), output[-10:]
    layout = work / "layout"
    store = f"containers-storage:[vfs@{work}/storage+{work}/runroot]"
    run(Step(name="export", argv=("skopeo", "copy", f"{store}{image}", f"oci:{layout}:image")),
        toolchain, binds=[str(work)])
    config, files = read_layout(layout, ["built-arch", "greeting"])
    assert config["architecture"] == arch
    assert files["built-arch"].decode() == f"{machine}\nwritten by a heredoc\n"
    assert files["greeting"].decode() == "hello from COPY <<EOF\n"


def read_layout(layout: Path, names: list[str]) -> tuple[dict, dict[str, bytes]]:
    """The image config and the named files (top layer wins) of an OCI layout's image."""
    def blob(digest: str) -> Path:
        return layout / "blobs" / "sha256" / digest.split(":", 1)[1]

    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
    config = json.loads(blob(manifest["config"]["digest"]).read_text())
    files: dict[str, bytes] = {}
    for layer in reversed(manifest["layers"]):
        opener = gzip.open if "gzip" in layer["mediaType"] else open
        with opener(blob(layer["digest"]), "rb") as raw, tarfile.open(fileobj=raw) as tar:
            for member in tar.getmembers():
                name = member.name.lstrip("./")
                if name in names and name not in files and member.isfile():
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    files[name] = extracted.read()
    assert sorted(files) == sorted(names)
    return config, files


def test_run_step_networks(toolchain: Toolchain, work: Path, playground: Playground) -> None:
    """A RUN step's default network is netavark's bridge on the toolchain's subnet (not the
    host CNI bridge's 10.88.0.0/16); with --network host it reaches the worker's 127.0.0.1."""
    context = context_with(work, (
        f"FROM {playground.base}\n"
        "RUN ip -4 addr show eth0 | sed -n 's/.*inet \\([0-9./]*\\).*/bridged-addr \\1/p'; "
        "ip route | sed -n 's/^default via \\([0-9.]*\\).*/bridged-gw \\1/p'\n"))
    bridged = run(build_step(work, context, "linux/amd64"), toolchain, binds=[str(work)])
    assert any(re.fullmatch(r"bridged-addr 10\.89\.\d+\.\d+/16", line) for line in bridged), \
        bridged
    assert "bridged-gw 10.89.0.1" in bridged
    context = context_with(work, (
        f"FROM {playground.base}\n"
        f"RUN wget -q -O - http://{playground.address}/v2/ && echo ' reached the registry'\n"))
    host = run(build_step(work, context, "linux/amd64", "--network", "host"), toolchain,
               binds=[str(work)])
    assert "{} reached the registry" in host, host[-10:]


def sleeping_build(work: Path, playground: Playground, token: str) -> Step:
    context = context_with(work, f"FROM {playground.base}\nRUN sleep {token}\n")
    return build_step(work, context, "linux/arm64")


def test_a_timed_out_step_leaves_nothing(toolchain: Toolchain, work: Path,
                                         playground: Playground) -> None:
    token = f"300.{uuid.uuid4().int % 10**9:09d}"
    step = sleeping_build(work, playground, token)
    with pytest.raises(StepFailed, match="timed out"):
        run(step, toolchain, binds=[str(work)], timeout_s=10)
    assert settle(lambda: processes_with(token)) == []
    # the work fixture checks the mounts and namespaces


KILLED_RUNNER = """
import json, sys, time
from multiarch.process import Step, run_step
step = Step(**json.loads(sys.argv[1]))
run_step(step, emit=lambda line: print(line, flush=True), deadline=time.monotonic() + 300,
         label="killed")
"""


def test_a_sigkilled_caller_leaves_nothing(toolchain: Toolchain, work: Path,
                                           playground: Playground) -> None:
    """SIGKILL the process running the step, mid-RUN (under QEMU): its step dies with it,
    and with the step's last process its mount namespace and every mount in it."""
    token = f"300.{uuid.uuid4().int % 10**9:09d}"
    step = wrap_step(sleeping_build(work, playground, token), toolchain=toolchain,
                     binds=[str(work)])
    caller = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUNNER,
         json.dumps({"name": step.name, "argv": step.argv, "env": dict(step.env)})],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 120
        while not processes_with(token) and time.monotonic() < end:
            assert caller.poll() is None, "the step ended before its RUN step started"
            time.sleep(0.2)
        assert processes_with(token), "the RUN step never started"
        assert namespaces_on(toolchain.scratch)
    finally:
        os.kill(caller.pid, signal.SIGKILL)
        caller.wait()
    assert settle(lambda: processes_with(token)) == []
    assert settle(lambda: namespaces_on(toolchain.scratch)) == []
