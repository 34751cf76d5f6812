"""Unit tests for the build plan: whole argv tuples, compared element by element."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from multiarch.handoff.layouts import export_step
from multiarch.plan import FETCH_SCRIPT, PlanPaths, Step, plan_build
from multiarch.platforms import Platform
from multiarch.request import BuildRequest
from multiarch.source import PinnedSource

GIT_URL = "https://git.example.com/team/app.git"
SHA = "0123456789abcdef0123456789abcdef01234567"
PATHS = PlanPaths(
    checkout="/scratch/run1/checkout",
    storage_root="/scratch/run1/storage",
    storage_runroot="/scratch/run1/runroot",
    layout="/shared/run1/linux-arm64",
)


@pytest.fixture
def context(tmp_path: Path) -> Path:
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "Containerfile.prod").write_text("FROM scratch\n")
    (tmp_path / "Containerfile").write_text("FROM scratch\n")
    return tmp_path


def request_for(context: str, **overrides: Any) -> BuildRequest:
    fields: dict[str, Any] = {
        "image": "127.0.0.1:5000/examples/hello:1.0",
        "platforms": ["linux/amd64", "linux/arm64"],
        "context": context,
    }
    fields.update(overrides)
    return BuildRequest.model_validate(fields)


def storage(driver: str) -> tuple[str, ...]:
    return (
        "--root", "/scratch/run1/storage",
        "--runroot", "/scratch/run1/runroot",
        "--storage-driver", driver,
    )  # fmt: skip


def test_local_context_with_everything(context: Path) -> None:
    request = request_for(
        str(context),
        build_args={"VERSION": "1.2", "DEBUG": "0"},
        labels={"team": "core", "tier": "web"},
        target="runtime",
        containerfile="docker/Containerfile.prod",
        insecure_registry=True,
        runner={"storage_driver": "vfs"},
    )
    source = PinnedSource(kind="local", location=str(context), revision=SHA)
    plan = plan_build(request, source, Platform.parse("linux/arm64"), PATHS, run_id="run1")

    image = "localhost/multiarch/linux-arm64:run1"
    assert plan.image == image
    assert plan.layout == "/shared/run1/linux-arm64"
    assert plan.layout_ref == "image"
    assert plan.platform == Platform.parse("linux/arm64")
    assert [step.name for step in plan.steps] == ["build", "export"]
    build, export = plan.steps
    assert build.argv == (
        "buildah", *storage("vfs"), "build",
        "--isolation", "oci", "--runtime", "runc",
        "--platform", "linux/arm64/v8",
        "--format", "oci",
        "--tls-verify=false",
        "--file", f"{context}/docker/Containerfile.prod",
        "--build-arg", "VERSION=1.2",
        "--build-arg", "DEBUG=0",
        "--label", "team=core",
        "--label", "tier=web",
        "--label", f"org.opencontainers.image.revision={SHA}",
        "--target", "runtime",
        "--runtime-flag", "root=/scratch/run1/runroot/runc",
        "--tag", image,
        str(context),
    )  # fmt: skip
    assert dict(build.env) == {"BUILDAH_ISOLATION": "oci",
                               "TMPDIR": "/scratch/run1/runroot/buildah-tmp"}
    assert export.argv == (
        "skopeo", "copy",
        "--dest-compress", "--dest-compress-format", "gzip",
        f"containers-storage:[vfs@/scratch/run1/storage+/scratch/run1/runroot]{image}",
        "oci:/shared/run1/linux-arm64:image",
    )  # fmt: skip
    assert dict(export.env) == {}


def test_local_context_minimal(context: Path) -> None:
    request = request_for(str(context))
    source = PinnedSource(kind="local", location=str(context), revision=None)
    plan = plan_build(request, source, Platform.parse("linux/arm/v7"), PATHS, run_id="abc")

    image = "localhost/multiarch/linux-arm-v7:abc"
    assert plan.image == image
    build, export = plan.steps
    assert build.argv == (
        "buildah", *storage("overlay"), "build",
        "--isolation", "oci", "--runtime", "runc",
        "--platform", "linux/arm/v7",
        "--format", "oci",
        "--runtime-flag", "root=/scratch/run1/runroot/runc",
        "--tag", image,
        str(context),
    )  # fmt: skip
    assert export.argv == (
        "skopeo", "copy",
        "--dest-compress", "--dest-compress-format", "gzip",
        f"containers-storage:[overlay@/scratch/run1/storage+/scratch/run1/runroot]{image}",
        "oci:/shared/run1/linux-arm64:image",
    )  # fmt: skip


def test_git_source_fetches_checks_out_and_labels() -> None:
    request = request_for(
        GIT_URL, git_ref="main", containerfile="Containerfile", build_args={"A": "b"}
    )
    source = PinnedSource(kind="git", location=GIT_URL, revision=SHA, ref="main")
    plan = plan_build(request, source, Platform.parse("linux/amd64"), PATHS, run_id="r9")

    image = "localhost/multiarch/linux-amd64:r9"
    assert [step.name for step in plan.steps] == ["fetch", "build", "export"]
    fetch, build, export = plan.steps
    assert fetch.argv == (
        "sh", "-c", FETCH_SCRIPT, "fetch", GIT_URL, "/scratch/run1/checkout", SHA,
    )  # fmt: skip
    assert dict(fetch.env) == {"GIT_TERMINAL_PROMPT": "0"}
    assert build.argv == (
        "buildah", *storage("overlay"), "build",
        "--isolation", "oci", "--runtime", "runc",
        "--platform", "linux/amd64",
        "--format", "oci",
        "--file", "/scratch/run1/checkout/Containerfile",
        "--build-arg", "A=b",
        "--label", f"org.opencontainers.image.source={GIT_URL}",
        "--label", f"org.opencontainers.image.revision={SHA}",
        "--runtime-flag", "root=/scratch/run1/runroot/runc",
        "--tag", image,
        "/scratch/run1/checkout",
    )  # fmt: skip
    assert export.argv[-2:] == (
        f"containers-storage:[overlay@/scratch/run1/storage+/scratch/run1/runroot]{image}",
        "oci:/shared/run1/linux-arm64:image",
    )


def test_git_url_starting_with_dash_stays_after_double_dash() -> None:
    request = request_for(GIT_URL)
    source = PinnedSource(kind="git", location="--upload-pack=evil.git", revision=SHA)
    fetch = plan_build(request, source, Platform.parse("linux/amd64"), PATHS, run_id="r").steps[0]
    assert fetch.argv[3:5] == ("fetch", "--upload-pack=evil.git")  # "$1" of the script
    assert '-- "$url"' in FETCH_SCRIPT


def test_user_labels_override_provenance() -> None:
    request = request_for(
        GIT_URL,
        labels={
            "org.opencontainers.image.source": "https://example.com/public",
            "org.opencontainers.image.revision": "release-1",
        },
    )
    source = PinnedSource(kind="git", location=GIT_URL, revision=SHA)
    build = plan_build(request, source, Platform.parse("linux/amd64"), PATHS, run_id="r").steps[1]
    labels = [build.argv[i + 1] for i, arg in enumerate(build.argv) if arg == "--label"]
    assert labels == [
        "org.opencontainers.image.source=https://example.com/public",
        "org.opencontainers.image.revision=release-1",
    ]


HOSTILE = {
    "SUBST": "$(id)",
    "QUOTES": 'it\'s "quoted"',
    "SEMI": "a; rm -rf /",
    "TICKS": "`uname -a`",
    "NEWLINE": "line1\nline2",
    "EMPTY": "",
    "EQUALS": "k=v=w",
    "SPACES": "  padded  ",
}


def test_hostile_build_args_reach_argv_verbatim(context: Path) -> None:
    request = request_for(str(context), build_args=HOSTILE)
    source = PinnedSource(kind="local", location=str(context))
    build = plan_build(request, source, Platform.parse("linux/amd64"), PATHS, run_id="r").steps[0]
    image = "localhost/multiarch/linux-amd64:r"
    pairs: list[str] = []
    for name, value in HOSTILE.items():
        pairs += ["--build-arg", f"{name}={value}"]
    assert build.argv == (
        "buildah", *storage("overlay"), "build",
        "--isolation", "oci", "--runtime", "runc",
        "--platform", "linux/amd64",
        "--format", "oci",
        *pairs,
        "--runtime-flag", "root=/scratch/run1/runroot/runc",
        "--tag", image,
        str(context),
    )  # fmt: skip
    assert "--build-arg" in build.argv
    assert "SUBST=$(id)" in build.argv
    assert "NEWLINE=line1\nline2" in build.argv
    assert "SEMI=a; rm -rf /" in build.argv


@pytest.mark.parametrize("driver", ["overlay", "vfs"])
def test_export_reference_names_the_driver(driver: str) -> None:
    step = export_step(PATHS, image="localhost/multiarch/linux-arm64:x", driver=driver)
    assert isinstance(step, Step)
    assert step.name == "export"
    assert step.argv == (
        "skopeo", "copy",
        "--dest-compress", "--dest-compress-format", "gzip",
        f"containers-storage:[{driver}@/scratch/run1/storage+/scratch/run1/runroot]"
        "localhost/multiarch/linux-arm64:x",
        "oci:/shared/run1/linux-arm64:image",
    )  # fmt: skip


def test_build_and_export_agree_on_driver(context: Path) -> None:
    request = request_for(str(context), runner={"storage_driver": "vfs"})
    source = PinnedSource(kind="local", location=str(context))
    build, export = plan_build(
        request, source, Platform.parse("linux/amd64"), PATHS, run_id="r"
    ).steps
    assert build.argv[build.argv.index("--storage-driver") + 1] == "vfs"
    assert export.argv[5].startswith("containers-storage:[vfs@")


def test_each_platform_gets_its_own_image_name(context: Path) -> None:
    request = request_for(str(context))
    source = PinnedSource(kind="local", location=str(context))
    names = {
        plan_build(request, source, Platform.parse(text), PATHS, run_id="r").image
        for text in ("linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6")
    }
    assert len(names) == 4


def test_local_runs_run_steps_in_an_oci_container(context: Path) -> None:
    """On the worker a RUN step gets its own namespaces (runc), not a chroot on the host."""
    request = request_for(str(context))
    source = PinnedSource(kind="local", location=str(context))
    build = plan_build(request, source, Platform.parse("linux/arm64"), PATHS, run_id="r").steps[0]
    at = build.argv.index("--isolation")
    assert build.argv[at : at + 4] == ("--isolation", "oci", "--runtime", "runc")
    assert dict(build.env) == {"BUILDAH_ISOLATION": "oci",
                               "TMPDIR": "/scratch/run1/runroot/buildah-tmp"}


def test_kubernetes_keeps_chroot_isolation_inside_its_pod() -> None:
    """runc cannot nest in an unprivileged pod; there the pod is the sandbox."""
    request = request_for(GIT_URL, runner={"kind": "kubernetes"})
    source = PinnedSource(kind="git", location=GIT_URL, revision=SHA)
    plan = plan_build(request, source, Platform.parse("linux/arm64"), PATHS, run_id="r")
    (build,) = [step for step in plan.steps if step.name == "build"]
    at = build.argv.index("--isolation")
    assert build.argv[at : at + 2] == ("--isolation", "chroot")
    assert "--runtime" not in build.argv
    assert dict(build.env) == {"BUILDAH_ISOLATION": "chroot"}
