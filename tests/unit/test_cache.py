"""The registry cache as data: repository names, build argv, and the build pod's credentials."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from multiarch.cache import cache_flags, cache_repositories, cache_repository
from multiarch.cache_checks import args_that_stop_the_cache, check_cache_use
from multiarch.plan import PlanPaths, build_step
from multiarch.platforms import Platform
from multiarch.references import ImageReference
from multiarch.request import BuildRequest, RunnerOptions
from multiarch.runners.kubernetes.manifests import REGISTRY_AUTH_FILE, platform_job
from multiarch.runners.kubernetes.options import KubernetesOptions
from multiarch.source import PinnedSource

IMAGE = ImageReference.model_validate("127.0.0.1:5000/examples/hello:1.0")
PATHS = PlanPaths(checkout="/s/src", storage_root="/s/root", storage_runroot="/s/run",
                  layout="/shared/run1/linux-arm64")
GIT = PinnedSource(kind="git", location="https://git.example.com/team/hello.git",
                   revision="0123456789abcdef0123456789abcdef01234567", ref="main")


@pytest.mark.parametrize(("platform", "repository"), [
    ("linux/amd64", "examples/hello/cache-amd64"),
    ("linux/aarch64", "examples/hello/cache-arm64"),
    ("linux/arm/v7", "examples/hello/cache-arm-v7"),
    ("linux/arm/v6", "examples/hello/cache-arm-v6"),
])
def test_one_cache_repository_per_architecture_next_to_the_image(
    platform: str, repository: str
) -> None:
    cache = cache_repository(IMAGE, Platform.parse(platform))
    assert cache.name == f"127.0.0.1:5000/{repository}"
    assert cache.tag is None


def local_request(tmp_path: Path, **fields: Any) -> BuildRequest:
    (tmp_path / "Containerfile").write_text("FROM scratch\n")
    return BuildRequest.model_validate({
        "image": str(IMAGE), "platforms": ["linux/amd64", "linux/arm64"],
        "context": str(tmp_path), **fields})


def test_cache_registry_adds_layers_and_the_same_repository_for_both_directions(
    tmp_path: Path,
) -> None:
    request = local_request(tmp_path, cache="registry", insecure_registry=True)
    arm64 = Platform.parse("linux/arm64")
    step = build_step(request, PinnedSource(kind="local", location=str(tmp_path)), arm64,
                      PATHS, context=str(tmp_path), image="localhost/multiarch/x:run1")
    repository = "127.0.0.1:5000/examples/hello/cache-arm64"
    assert cache_flags(request, arm64) == (
        "--layers", "--cache-from", repository, "--cache-to", repository)
    argv = list(step.argv)
    start = argv.index("--layers")
    assert argv[start:start + 5] == list(cache_flags(request, arm64))
    assert "--tls-verify=false" in argv  # covers the cache pulls and pushes too
    assert argv[-3:] == ["--tag", "localhost/multiarch/x:run1", str(tmp_path)]


def test_cache_none_changes_nothing(tmp_path: Path) -> None:
    request = local_request(tmp_path)
    assert request.cache == "none"
    assert cache_flags(request, Platform.parse("linux/amd64")) == ()
    assert cache_repositories(request) == []
    step = build_step(request, PinnedSource(kind="local", location=str(tmp_path)),
                      Platform.parse("linux/amd64"), PATHS, context=str(tmp_path), image="x")
    assert not any(arg.startswith("--cache") or arg == "--layers" for arg in step.argv)


def test_cache_repositories_lists_each_platform_once(tmp_path: Path) -> None:
    request = local_request(tmp_path, cache="registry")
    assert [r.repository for r in cache_repositories(request)] == [
        "examples/hello/cache-amd64", "examples/hello/cache-arm64"]


def kube_job(cache: str, handoff: str = "shared", **kube: Any) -> dict[str, Any]:
    request = BuildRequest(
        image="registry.example.com/team/hello:1.0", platforms=("linux/arm64",),
        context=GIT.location, cache=cache, handoff=handoff,
        runner=RunnerOptions(kind="kubernetes", kubernetes=KubernetesOptions(**kube)),
    )
    return platform_job(request, GIT, request.platforms[0], run_id="run1", flow_run_id="f1")


def steps_of(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    pod = job["spec"]["template"]["spec"]
    return {c["name"]: c for c in [*pod.get("initContainers", []), *pod["containers"]]}


def test_with_the_cache_only_the_build_step_gets_the_registry_secret() -> None:
    job = kube_job("registry", registry_secret="registry-auth")
    steps = steps_of(job)
    auth_env = {"name": "REGISTRY_AUTH_FILE", "value": REGISTRY_AUTH_FILE}
    assert auth_env in steps["build"]["env"]
    assert {"name": "registry-auth", "mountPath": "/run/multiarch/registry-auth",
            "readOnly": True} in steps["build"]["volumeMounts"]
    for name in ("prepare", "fetch", "export"):
        assert auth_env not in steps[name]["env"], name
        assert all(m["name"] != "registry-auth" for m in steps[name]["volumeMounts"]), name
    volume = next(v for v in job["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == "registry-auth")
    assert volume["secret"]["secretName"] == "registry-auth"
    kubernetes_validate.validate(job, "1.30.0", strict=True)


def test_cache_and_registry_handoff_give_the_secret_to_build_and_push_only() -> None:
    job = kube_job("registry", handoff="registry", registry_secret="registry-auth")
    steps = steps_of(job)
    auth_env = {"name": "REGISTRY_AUTH_FILE", "value": REGISTRY_AUTH_FILE}
    assert [name for name, step in steps.items() if auth_env in step["env"]] == \
        ["build", "push"]
    assert all("persistentVolumeClaim" not in v
               for v in job["spec"]["template"]["spec"]["volumes"])
    kubernetes_validate.validate(job, "1.30.0", strict=True)


def test_without_the_cache_a_pull_only_login_keeps_push_rights_out_of_the_build_pod() -> None:
    job = kube_job("none", registry_secret="registry-auth", pull_secret="registry-read")
    assert "'registry-auth'" not in str(job)
    assert "registry-read" in str(job)


@pytest.mark.parametrize(("text", "names"), [
    ("ARG BASE\nFROM $BASE\nRUN make\nCOPY . /src\n", []),  # a global ARG is no step
    ("FROM a\nARG V=1\nRUN echo $V\n", ["V"]),
    ("FROM a\nRUN make\nARG LATE\n", []),  # nothing below it to lose
    ("FROM a AS b\nARG X\nFROM b\nRUN \\\n  make\n", []),  # a new stage starts afresh
    ("FROM a\nARG X\nARG Y=2\nCOPY . /\nARG X\nADD f /\n", ["X", "Y"]),
])
def test_stage_args_that_end_the_registry_cache(text: str, names: list[str]) -> None:
    assert args_that_stop_the_cache(text) == names


def test_preflight_names_the_arg_that_defeats_the_cache(tmp_path: Path) -> None:
    request = local_request(tmp_path, cache="registry")
    (tmp_path / "Containerfile").write_text("FROM scratch\nARG TARGETARCH\nCOPY x /x\n")
    (note,) = check_cache_use(request, None)
    assert note.startswith("cache: ARG TARGETARCH inside a stage") and "#4315" in note
    assert check_cache_use(local_request(tmp_path), None) == []  # cache: none
