"""Bad inputs are refused before any build: one line naming the field and the fix, in seconds.

Each case runs as a user meets it: `multiarch build` as a subprocess, or, for fields only a
deployment can set (runner options as JSON), the flow function with those parameters.
Each asserts: a non-zero exit (or a raised error), exactly one error line that names the
field or flag and says what to do, that it came within a few seconds, and that nothing was
built (no `<work>/builds`, no container storage, no layout) and nothing pushed.
Cases refused by validation need no Prefect at all; preflight cases run the flow against
the session's Prefect server and the playground registry.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prefect.exceptions import ParameterTypeError

from devtools.registry import free_port
from multiarch.errors import MultiarchError
from tests.faults.scenario_report import append
from tests.integration.conftest import EXAMPLE_HELLO, Playground, registry_files

pytestmark = pytest.mark.integration

MULTIARCH = Path(sys.executable).parent / "multiarch"
VALIDATION_WITHIN_S = 5.0  # no Prefect start: a Python start-up and a pydantic model
PREFLIGHT_WITHIN_S = 15.0  # a flow run on a running server, then the checks themselves
CLOSED = f"127.0.0.1:{free_port()}"  # nothing listens here: nothing can be pushed


@dataclass(frozen=True)
class Case:
    """A bad `multiarch build` command line: flags replaced or added to a good one."""

    name: str
    flags: dict[str, str | list[str]]  # flag -> value (or values, for repeatable flags)
    field: str  # what the error line must name
    fix: str  # what the error line must say to do
    extra: list[str] = field(default_factory=list)


def good_flags(work: Path, image: str) -> dict[str, str | list[str]]:
    return {"--image": image, "--platform": ["linux/amd64"], "--context": str(EXAMPLE_HELLO),
            "--work-dir": str(work)}


def argv(flags: dict[str, str | list[str]], extra: list[str]) -> list[str]:
    args = [str(MULTIARCH), "build"]
    for flag, value in flags.items():
        for item in [value] if isinstance(value, str) else value:
            args += [flag, item] if not item.startswith("-") else [f"{flag}={item}"]
    return [*args, "--insecure-registry", *extra]


GIT = "https://git.example.com/team/app.git"

VALIDATION_CASES = [
    Case("image-without-registry-host", {"--image": "hello:latest"}, "image", "write it in full"),
    Case("image-namespace-instead-of-host", {"--image": "team/app:1"}, "image",
         "write e.g. docker.io/team/app:1"),
    Case("image-tag-bad-characters", {"--image": "127.0.0.1:5000/team/app:v1!"}, "image",
         "letters, digits"),
    Case("image-empty-tag", {"--image": "127.0.0.1:5000/team/app:"}, "image",
         "letters, digits"),
    Case("image-uppercase-repository", {"--image": "127.0.0.1:5000/Team/App:1"}, "image",
         "lowercase"),
    Case("image-port-0", {"--image": "127.0.0.1:0/team/app:1"}, "image", "from 1 to 65535"),
    Case("image-port-65536", {"--image": "127.0.0.1:65536/team/app:1"}, "image",
         "from 1 to 65535"),
    Case("image-port-99999", {"--image": "127.0.0.1:99999/team/app:1"}, "image",
         "from 1 to 65535"),
    Case("image-digest-garbage", {"--image": "127.0.0.1:5000/team/app@sha256:zz"}, "image",
         "a push target is a name and tag"),
    Case("tag-leading-dash", {}, "tags", "not starting with . or -", extra=["--tag=-bad"]),
    Case("tag-too-long", {}, "tags", "up to 128 characters", extra=["--tag", "x" * 129]),
    Case("tag-with-slash", {}, "tags", "letters, digits", extra=["--tag", "a/b"]),
    Case("platform-lone-unknown-arch", {"--platform": ["linux/sparc"]}, "platforms.0",
         "use one of"),
    Case("platform-without-arch", {"--platform": ["linux"]}, "platforms.0",
         "write e.g. linux/amd64"),
    Case("platform-windows", {"--platform": ["windows/amd64"]}, "platforms.0",
         "write linux/ARCH"),
    Case("platform-bad-variant", {"--platform": ["linux/arm/v9"]}, "platforms.0",
         "use one of v5, v6, v7"),
    Case("platform-duplicate-by-alias", {"--platform": ["linux/amd64", "linux/x86_64"]},
         "platforms", "listed twice"),
    Case("context-missing-directory", {"--context": "/does/not/exist"}, "context",
         "neither an existing directory nor a git URL"),
    Case("context-is-a-file", {"--context": str(EXAMPLE_HELLO / "Containerfile")}, "context",
         "neither an existing directory nor a git URL"),
    Case("containerfile-missing", {"--file": "Nope.containerfile"}, "containerfile",
         "does not exist in context"),
    Case("containerfile-outside-context", {"--file": "../hello/Containerfile"}, "containerfile",
         "relative to it"),
    Case("build-arg-bad-name", {"--build-arg": ["1BAD=x"]}, "build_args",
         "use letters, digits and _"),
    Case("label-key-with-space", {"--label": ["bad key=x"]}, "labels", "without spaces"),
    Case("target-bad-stage-name", {"--target": "bad stage"}, "target", "not a valid stage name"),
    Case("timeout-zero", {"--timeout": "0"}, "runner.timeout_s", "greater than 0"),
    Case("timeout-negative", {"--timeout": "-5"}, "runner.timeout_s", "greater than 0"),
    Case("work-dir-with-colon", {"--work-dir": "/var/tmp/multiarch:2"}, "runner.work_dir",
         "choose a directory without ':'"),
    Case("shared-dir-with-colon", {"--shared-dir": "/var/tmp/shared:2"}, "runner.shared_dir",
         "choose a directory without ':'"),
    Case("work-dir-with-storage-separator", {"--work-dir": "/var/tmp/a+b"}, "runner.work_dir",
         "choose a directory without them"),
    Case("git-ref-with-local-context", {"--git-ref": "main"}, "git_ref", "give a git URL"),
    Case("kubernetes-with-local-context", {"--runner": "kubernetes"}, "context",
         "builds from a git URL"),
    Case("kubernetes-negative-grace", {"--runner": "kubernetes", "--context": GIT,
                                       "--unschedulable-grace": "-1"},
         "runner.kubernetes.unschedulable_grace_s", "greater than or equal to 0"),
    Case("kubernetes-bad-namespace", {"--runner": "kubernetes", "--context": GIT,
                                      "--namespace": "Bad_NS"},
         "runner.kubernetes.namespace", "lowercase DNS label"),
]

# Fields only a deployment (flow parameters, runner options as JSON) can set.
KUBE = {"kind": "kubernetes"}
FLOW_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("flow-platforms-empty", {"platforms": []}, "platforms", "name at least one"),
    ("flow-rebuild-unknown", {"rebuild": "sometimes"}, "rebuild", "'always' or 'if-changed'"),
    ("flow-runner-kind-unknown", {"runner": {"kind": "nomad"}}, "runner.kind",
     "'local' or 'kubernetes'"),
    ("flow-storage-driver-unknown", {"runner": {"storage_driver": "zfs"}},
     "runner.storage_driver", "'overlay' or 'vfs'"),
    ("flow-shared-dir-with-colon", {"runner": {"shared_dir": "/srv/a:b"}}, "runner.shared_dir",
     "without ':'"),
    ("flow-kube-node-selector-bad-key",
     {"context": GIT, "runner": {**KUBE, "kubernetes": {"placements": {
         "linux/amd64": {"node_selector": {"bad key!": "x"}}}}}},
     "node_selector", "[dns.prefix/]name"),
    ("flow-kube-node-selector-bad-value",
     {"context": GIT, "runner": {**KUBE, "kubernetes": {"placements": {
         "linux/amd64": {"node_selector": {"kubernetes.io/arch": "arm 64"}}}}}},
     "node_selector", "up to 63 letters"),
    ("flow-kube-placement-unknown-platform",
     {"context": GIT, "runner": {**KUBE, "kubernetes": {"placements": {"linux/sparc": {}}}}},
     "runner.kubernetes.placements", "use one of"),
    ("flow-kube-negative-ttl",
     {"context": GIT, "runner": {**KUBE, "kubernetes": {"ttl_after_finished_s": -1}}},
     "runner.kubernetes.ttl_after_finished_s", "greater than or equal to 0"),
]


def record(name: str, error: str, stage: str) -> None:
    append({"kind": "bad-input", "name": name, "error": error, "stage": stage})


def run_cli(args: list[str], *, api_url: str | None = None,
            ) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    started = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env,
                          check=False)
    return done, time.monotonic() - started


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line `multiarch` writes about the failure (Prefect may log around it)."""
    assert done.returncode != 0, done.stdout[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("multiarch: ")]
    assert len(lines) == 1, done.stderr[-3000:]
    assert done.stdout == ""
    return lines[0]


def assert_nothing_built(work: Path) -> None:
    assert not (work / "builds").exists(), "a build started"
    assert not list(work.rglob("overlay*")) and not list(work.rglob("vfs*")), "storage created"
    assert not list(work.rglob("index.json")), "a layout was written"


def pushed(playground: Playground) -> set[str]:
    """What the registry stores, without upload sessions (the push check opens and cancels one)."""
    return {path for path in registry_files(playground) if "/_uploads/" not in path}


@pytest.mark.parametrize("case", VALIDATION_CASES, ids=[c.name for c in VALIDATION_CASES])
def test_bad_input_is_refused_by_validation(case: Case, tmp_path: Path) -> None:
    work = tmp_path / "work"
    flags = {**good_flags(work, f"{CLOSED}/bad/input:1"), **case.flags}
    done, elapsed = run_cli(argv(flags, case.extra))
    line = error_line(done)
    assert done.stderr.strip() == line, "more than one line on stderr"
    assert f"{case.field}:" in line
    assert case.fix in line
    assert "Tuple should" not in line and "Value error" not in line
    assert elapsed < VALIDATION_WITHIN_S
    assert not work.exists(), "validation touched the work directory"
    record(case.name, line, "validation")


@pytest.mark.parametrize(("name", "params", "field_name", "fix"), FLOW_CASES,
                         ids=[c[0] for c in FLOW_CASES])
def test_bad_deployment_parameters_are_refused_by_the_flow(
    prefect_server: str, tmp_path: Path, name: str, params: dict[str, Any], field_name: str,
    fix: str,
) -> None:
    from flows.build import build_multiarch_image

    work = tmp_path / "work"
    parameters: dict[str, Any] = {"image": f"{CLOSED}/bad/input:1", "platforms": ["linux/amd64"],
                                  "context": str(EXAMPLE_HELLO)}
    parameters.update(params)
    runner = parameters.setdefault("runner", {})
    runner.setdefault("work_dir", str(work))
    started = time.monotonic()
    with pytest.raises((MultiarchError, ParameterTypeError)) as info:
        build_multiarch_image(**parameters)
    elapsed = time.monotonic() - started
    line = problem_line(info.value)
    assert f"{field_name}" in line and fix in line, line
    assert "Tuple should" not in line
    assert elapsed < PREFLIGHT_WITHIN_S
    assert not work.exists()
    record(name, line, "validation")


def problem_line(error: BaseException) -> str:
    """Our ConfigurationError is one line. Prefect validates typed parameters (`runner`)
    before the flow body runs: its error is a header plus one line per problem."""
    if not isinstance(error, ParameterTypeError):
        assert "\n" not in str(error)
        return str(error)
    header, *problems = str(error).splitlines()
    assert header == "Flow run received invalid parameters:"
    assert len(problems) == 1, str(error)
    return problems[0].removeprefix(" - ")


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def run_preflight_case(playground: Playground, prefect_server: str, work: Path, *,
                       flags: dict[str, str | list[str]], insecure: bool = True,
                       extra: list[str] | None = None) -> str:
    """Run the CLI against the playground; return its one error line after the checks."""
    image = f"{playground.address}/bad/preflight:1"
    before = pushed(playground)
    args = argv({**good_flags(work, image), "--build-arg": [f"BASE={playground.base}"],
                 **flags}, extra or [])
    if not insecure:
        args.remove("--insecure-registry")
    done, elapsed = run_cli(args, api_url=prefect_server)
    line = error_line(done)
    assert elapsed < PREFLIGHT_WITHIN_S, f"refused only after {elapsed:.1f}s"
    assert pushed(playground) == before, "something was pushed"
    assert_nothing_built(work)
    return line


def test_missing_target_stage_is_refused_before_any_build(playground, prefect_server, tmp_path):
    work = tmp_path / "work"
    line = run_preflight_case(playground, prefect_server, work,
                              flags={"--target": "nosuchstage"})
    assert "target: stage 'nosuchstage' is not in the Containerfile" in line
    assert "drop --target" in line
    record("target-stage-missing", line, "preflight")


def test_unreachable_registry_is_refused_in_seconds(playground, prefect_server, tmp_path):
    work = tmp_path / "work"
    line = run_preflight_case(playground, prefect_server, work,
                              flags={"--image": f"{CLOSED}/bad/unreachable:1"})
    assert line.startswith(f"multiarch: image: registry {CLOSED} is unreachable")
    assert "Connection refused" in line and "check the address" in line
    record("registry-unreachable-closed-port", line, "preflight")


def test_plain_http_registry_without_insecure_flag_is_refused(playground, prefect_server,
                                                              tmp_path):
    work = tmp_path / "work"
    line = run_preflight_case(playground, prefect_server, work, flags={}, insecure=False)
    assert line.startswith(f"multiarch: image: registry {playground.address} is unreachable")
    assert "--insecure-registry" in line
    record("registry-plain-http-without-insecure", line, "preflight")


def test_work_dir_below_a_file_is_refused(playground, prefect_server, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    work = blocker / "work"
    line = run_preflight_case(playground, prefect_server, work, flags={})
    assert f"work_dir: {work} is not writable (Not a directory)" in line
    assert "--work-dir" in line
    record("work-dir-below-a-file", line, "preflight")


def test_read_only_work_dir_is_refused(playground, prefect_server, tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as work:
        line = run_preflight_case(playground, prefect_server, work, flags={})
        assert f"work_dir: {work} is not writable (Read-only file system)" in line
        assert not list(work.iterdir())
    record("work-dir-read-only", line, "preflight")


def test_read_only_shared_dir_is_refused(playground, prefect_server, tmp_path):
    work = tmp_path / "work"
    with tmpfs(tmp_path / "shared-ro", "ro,size=1m") as shared:
        line = run_preflight_case(playground, prefect_server, work,
                                  flags={"--shared-dir": str(shared)})
        assert f"shared_dir: {shared} is not writable (Read-only file system)" in line
        assert "--shared-dir" in line
    record("shared-dir-read-only", line, "preflight")


def test_work_dir_without_free_space_is_refused(playground, prefect_server, tmp_path):
    with tmpfs(tmp_path / "small", "size=2m") as work:
        line = run_preflight_case(playground, prefect_server, work, flags={})
        assert f"work_dir: {work} has 0.00 GiB free, less than the 1 GiB" in line
        assert "free space there or choose another --work-dir" in line
        assert not list(work.iterdir()), "the probe file was left behind"
    record("work-dir-without-free-space", line, "preflight")


def test_missing_target_stage_in_a_git_context_is_refused_after_pinning(
    playground, prefect_server, tmp_path
):
    """A git Containerfile is read at the pinned commit, still before any build."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "Containerfile").write_text("ARG BASE\nFROM ${BASE} AS base\nRUN true\n")
    for command in (["init", "--quiet", "--initial-branch=main"], ["add", "."],
                    ["-c", "user.name=t", "-c", "user.email=t@example.com", "commit",
                     "--quiet", "-m", "one"]):
        subprocess.run(["git", *command], cwd=repo, check=True, capture_output=True)
    work = tmp_path / "work"
    line = run_preflight_case(playground, prefect_server, work,
                              flags={"--context": f"file://{repo}", "--target": "release"})
    assert "target: stage 'release' is not in the Containerfile (its stages: base" in line
    record("target-stage-missing-git", line, "preflight")
