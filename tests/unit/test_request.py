"""Unit tests for BuildRequest: every validation error names the field it is about."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from multiarch.platforms import Platform
from multiarch.request import BuildRequest, RunnerOptions, describe_validation_error, is_git_url

GIT_URL = "https://git.example.com/team/app.git"


@pytest.fixture
def context(tmp_path: Path) -> Path:
    directory = tmp_path / "ctx"
    directory.mkdir()
    (directory / "Containerfile").write_text("FROM scratch\n")
    return directory


def make(context: Path | str, **overrides: Any) -> BuildRequest:
    fields: dict[str, Any] = {
        "image": "127.0.0.1:5000/examples/hello:1.0",
        "platforms": ["linux/amd64", "linux/arm64"],
        "context": str(context),
    }
    fields.update(overrides)
    return BuildRequest.model_validate(fields)


def error_of(context: Path | str, **overrides: Any) -> str:
    with pytest.raises(ValidationError) as info:
        make(context, **overrides)
    return describe_validation_error(info.value)


def test_valid_local_request(context: Path) -> None:
    request = make(context, build_args={"A": "1"}, labels={"team": "core"}, target="runtime")
    assert request.platforms == (Platform.parse("linux/amd64"), Platform.parse("linux/arm64"))
    assert str(request.image) == "127.0.0.1:5000/examples/hello:1.0"
    assert request.is_git is False
    assert request.build_args == {"A": "1"}
    assert request.runner == RunnerOptions()
    assert request.runner.storage_driver == "overlay"
    assert request.allow_emulation is False
    assert request.insecure_registry is False


def test_platform_aliases_normalise(context: Path) -> None:
    request = make(context, platforms=["linux/x86_64", "linux/aarch64", "linux/armhf"])
    assert [str(p) for p in request.platforms] == ["linux/amd64", "linux/arm64", "linux/arm/v7"]


def test_dockerfile_is_enough(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    assert make(tmp_path).context == str(tmp_path)


def test_custom_containerfile_inside_context(tmp_path: Path) -> None:
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "App.containerfile").write_text("FROM scratch\n")
    request = make(tmp_path, containerfile="build/App.containerfile")
    assert request.containerfile == "build/App.containerfile"


# --- errors name the field ---------------------------------------------------------------


def test_bad_second_platform_names_its_index(context: Path) -> None:
    message = error_of(context, platforms=["linux/amd64", "linux/sparc"])
    assert message.startswith("platforms.1: ")
    assert "'sparc' is unknown" in message
    assert "Value error" not in message


def test_duplicate_platform_spellings_are_rejected(context: Path) -> None:
    message = error_of(context, platforms=["linux/arm64/v8", "linux/aarch64"])
    assert message.startswith("platforms: ")
    assert "linux/arm64 is listed twice" in message


def test_no_platforms(context: Path) -> None:
    assert error_of(context, platforms=[]) == (
        "platforms: none given: name at least one (e.g. --platform linux/amd64)"
    )


@pytest.mark.parametrize("platform", ["linux/sparc", "linux", "windows/amd64", "linux/arm/v9"])
def test_a_lone_bad_platform_gives_one_clean_problem(context: Path, platform: str) -> None:
    message = error_of(context, platforms=[platform])
    assert message.startswith("platforms.0: platform ")
    assert ";" not in message
    assert "Tuple should" not in message


@pytest.mark.parametrize("name", ["work_dir", "shared_dir"])
def test_a_colon_in_a_directory_is_refused_with_the_reason(context: Path, name: str) -> None:
    message = error_of(context, runner={name: "/srv/build:2"})
    assert message == (
        f"runner.{name}: '/srv/build:2' contains ':', which skopeo's oci:PATH:TAG reference "
        "splits on (the layout would land elsewhere): choose a directory without ':'"
    )


@pytest.mark.parametrize("path", ["/srv/a+b", "/srv/a@b", "/srv/[a]"])
def test_storage_reference_separators_are_refused(context: Path, path: str) -> None:
    assert "containers-storage:[DRIVER@ROOT+RUNROOT]" in error_of(context,
                                                                   runner={"work_dir": path})


def test_an_empty_directory_is_refused(context: Path) -> None:
    assert error_of(context, runner={"work_dir": " "}).startswith("runner.work_dir: is empty")


def test_missing_platforms(context: Path) -> None:
    with pytest.raises(ValidationError) as info:
        BuildRequest.model_validate({"image": "localhost/app", "context": str(context)})
    assert describe_validation_error(info.value).startswith("platforms: ")


def test_bad_image(context: Path) -> None:
    message = error_of(context, image="team/app")
    assert message.startswith("image: ")
    assert "looks like a namespace" in message


def test_bad_extra_tag(context: Path) -> None:
    message = error_of(context, tags=["ok", "not ok"])
    assert message.startswith("tags: ")
    assert "'not ok'" in message


def test_bad_build_arg_name(context: Path) -> None:
    message = error_of(context, build_args={"GOOD": "x", "BAD-NAME": "y"})
    assert message.startswith("build_args: ")
    assert "'BAD-NAME'" in message


@pytest.mark.parametrize("key", ["", "has space", "a=b"])
def test_bad_label_key(context: Path, key: str) -> None:
    assert error_of(context, labels={key: "v"}).startswith("labels: ")


def test_bad_target(context: Path) -> None:
    assert error_of(context, target="-stage").startswith("target: ")


@pytest.mark.parametrize("path", ["/etc/Containerfile", "../Containerfile", "a/../../b"])
def test_containerfile_outside_context(context: Path, path: str) -> None:
    message = error_of(context, containerfile=path)
    assert message.startswith("containerfile: ")
    assert "inside the context" in message


def test_runner_options_are_checked(context: Path) -> None:
    assert error_of(context, runner={"timeout_s": 0}).startswith("runner.timeout_s: ")
    assert error_of(context, runner={"storage_driver": "btrfs"}).startswith(
        "runner.storage_driver: "
    )
    assert error_of(context, runner={"kind": "docker"}).startswith("runner.kind: ")
    assert error_of(context, runner={"kind": "kubernetes"}).startswith("context: ")
    assert "builds from a git URL" in error_of(context, runner={"kind": "kubernetes"})
    assert error_of(
        context, runner={"kubernetes": {"namespace": "Not_A_Name"}}
    ).startswith("runner.kubernetes.namespace: ")


def test_unknown_field_is_rejected(context: Path) -> None:
    assert error_of(context, password="hunter2").startswith("password: ")


def test_every_problem_is_reported(context: Path) -> None:
    message = error_of(
        context, image="app", platforms=["linux/amd64", "linux/sparc"], build_args={"1X": "v"}
    )
    parts = message.split("; ")
    assert [part.split(":", 1)[0] for part in parts] == ["image", "platforms.1", "build_args"]


# --- local context ---------------------------------------------------------------------


def test_missing_context_directory_is_rejected(tmp_path: Path) -> None:
    message = error_of(tmp_path / "absent")
    assert message.startswith("context: ")
    assert "is neither an existing directory nor a git URL" in message


def test_context_without_containerfile_is_rejected(tmp_path: Path) -> None:
    message = error_of(tmp_path)
    assert message.startswith("context: ")
    assert "has no Containerfile or Dockerfile" in message


def test_named_containerfile_must_exist(context: Path) -> None:
    message = error_of(context, containerfile="Other.containerfile")
    assert message.startswith("containerfile: ")
    assert "'Other.containerfile' does not exist" in message


def test_context_file_is_not_a_directory(context: Path) -> None:
    message = error_of(context / "Containerfile")
    assert message.startswith("context: ")
    assert "is neither an existing directory nor a git URL" in message


def test_git_ref_with_local_context_is_rejected(context: Path) -> None:
    message = error_of(context, git_ref="main")
    assert message.startswith("git_ref: ")
    assert "context is a local directory" in message


# --- git contexts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/team/app",
        "http://git.example.com/team/app",
        "https://git.example.com/team/app.git",
        "ssh://git@git.example.com/team/app.git",
        "git://git.example.com/team/app",
        "file:///srv/git/app",
        "git@github.com:team/app.git",
        "git@github.com:team/app",
    ],
)
def test_git_urls(url: str) -> None:
    assert is_git_url(url)
    request = make(url, git_ref="v1.2", containerfile="docker/Containerfile")
    assert request.is_git
    assert request.git_ref == "v1.2"


@pytest.mark.parametrize(
    "path", ["/srv/app", "./app", "app", "/srv/git-repos/app", "/srv/app.git", "work/app.git/"]
)
def test_local_paths_are_not_git_urls(path: str) -> None:
    assert not is_git_url(path)


def test_git_context_is_not_checked_on_disk() -> None:
    request = make(GIT_URL)
    assert request.is_git
    assert request.git_ref is None


def test_git_containerfile_must_still_be_relative() -> None:
    assert error_of(GIT_URL, containerfile="/Containerfile").startswith("containerfile: ")


# --- tags ------------------------------------------------------------------------------


def test_all_tags_image_tag_first_then_extras_without_repeats(context: Path) -> None:
    request = make(context, tags=["latest", "1.0", "1", "latest"])
    assert request.all_tags == ("1.0", "latest", "1")


def test_all_tags_default_to_latest(context: Path) -> None:
    request = make(context, image="localhost/app", tags=["stable", "latest"])
    assert request.all_tags == ("latest", "stable")


def test_all_tags_only_image_tag(context: Path) -> None:
    assert make(context).all_tags == ("1.0",)


def test_request_is_frozen(context: Path) -> None:
    request = make(context)
    with pytest.raises(ValidationError):
        request.context = "/elsewhere"  # type: ignore[misc]


def test_round_trips_through_json(context: Path) -> None:
    request = make(context, tags=["x"], build_args={"A": "$(id)"}, labels={"k": "v"})
    again = BuildRequest.model_validate_json(request.model_dump_json())
    assert again == request
    assert request.model_dump()["platforms"] == ("linux/amd64", "linux/arm64")


# --- optional platforms ----------------------------------------------------------------------


def test_optional_platforms_are_a_subset_of_platforms_in_any_spelling(context: Path) -> None:
    request = make(context, optional_platforms=["linux/aarch64"])
    assert request.optional_platforms == (Platform.parse("linux/arm64"),)
    assert request.is_optional(Platform.parse("linux/arm64/v8"))
    assert not request.is_optional(Platform.parse("linux/amd64"))
    assert make(context).optional_platforms == ()


def test_an_optional_platform_must_be_one_of_platforms(context: Path) -> None:
    assert error_of(context, optional_platforms=["linux/s390x"]) == (
        "optional_platforms: linux/s390x is not one of platforms (linux/amd64, linux/arm64): "
        "add it to platforms or drop it from optional_platforms")


def test_one_platform_must_stay_required(context: Path) -> None:
    message = error_of(context, optional_platforms=["linux/arm64", "linux/amd64"])
    assert message.startswith("optional_platforms: every platform is optional")
    assert "keep at least one platform required" in message


def test_a_bad_or_repeated_optional_platform_names_the_field(context: Path) -> None:
    assert error_of(context, optional_platforms=["linux/sparc"]).startswith(
        "optional_platforms.0: platform architecture 'sparc' is unknown")
    assert error_of(context, optional_platforms=["linux/arm64", "linux/aarch64"]) == (
        "optional_platforms: platform linux/arm64 is listed twice")
