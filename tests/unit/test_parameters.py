"""The flow's parameters and the CLI's flags are BuildRequest's fields: they cannot drift."""

from __future__ import annotations

import argparse
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from flows.build import build_multiarch_image
from multiarch.cli import build_parser, request_from_args
from multiarch.parameters import Cli, add_request_options, flow_signature, options
from multiarch.parameters import request_from_args as request_fields
from multiarch.request import BuildRequest

HELLO = "examples/hello"


def test_every_request_field_is_a_flow_parameter_with_its_description():
    schema = build_multiarch_image.parameters
    assert list(schema.properties) == list(BuildRequest.model_fields)
    assert sorted(schema.required) == ["context", "image", "platforms"]
    for name, field in BuildRequest.model_fields.items():
        assert schema.properties[name]["description"].split()[:3] == \
            (field.description or "").split()[:3], name


def test_written_values_stay_strings_in_the_ui_form():
    props = build_multiarch_image.parameters.properties
    assert props["image"]["type"] == "string"
    assert props["platforms"]["items"] == {"type": "string"}
    assert props["optional_platforms"]["anyOf"][0]["items"] == {"type": "string"}
    assert set(props["handoff"]["enum"]) == {"shared", "registry"}


def test_every_scalar_field_has_a_flag_including_the_ones_the_cli_used_to_lack():
    help_text = build_parser().format_help() + build_parser()._subparsers._group_actions[0] \
        .choices["build"].format_help()  # type: ignore[union-attr]
    for flag in ("--rebuild", "--handoff", "--cache", "--source-date-epoch", "--platform",
                 "--tag", "--build-arg", "--file", "--runner", "--timeout", "--namespace",
                 "--unschedulable-grace", "--git-credentials-block", "--keep-shared",
                 "--optional-platform"):
        assert flag in help_text, flag


def test_flags_make_the_same_request_as_parameters():
    args = build_parser().parse_args([
        "build", "--image", "127.0.0.1:5000/a/b:1", "--platform", "linux/amd64",
        "--platform", "linux/arm64", "--context", HELLO, "--tag", "x", "--build-arg", "A=1=2",
        "--rebuild", "if-changed", "--handoff", "registry", "--cache", "registry",
        "--source-date-epoch", "0", "--timeout", "60", "--namespace", "ns",
        "--optional-platform", "linux/arm64",
    ])
    from_flags = request_from_args(args)
    from_parameters = BuildRequest(
        image="127.0.0.1:5000/a/b:1", platforms=["linux/amd64", "linux/arm64"], context=HELLO,
        tags=["x"], build_args={"A": "1=2"}, rebuild="if-changed", handoff="registry",
        cache="registry", source_date_epoch=0, optional_platforms=["linux/arm64"],
        runner={"timeout_s": 60, "kubernetes": {"namespace": "ns"}},
    )
    assert from_flags == from_parameters


def test_unset_flags_leave_the_model_defaults():
    args = build_parser().parse_args(["build", "--image", "127.0.0.1:5000/a/b",
                                      "--platform", "linux/amd64", "--context", HELLO])
    assert request_from_args(args) == BuildRequest(image="127.0.0.1:5000/a/b",
                                                   platforms=["linux/amd64"], context=HELLO)


def test_a_new_field_becomes_a_flag_and_a_parameter_without_other_edits():
    class Inner(BaseModel):
        depth: int = Field(1, description="How deep.")

    class Request(BaseModel):
        name: str = Field(description="A name.")
        colours: Annotated[tuple[str, ...], Cli("--colour")] = Field((), description="Colours.")
        mode: Literal["a", "b"] = "a"
        inner: Inner = Field(default_factory=Inner)

    parser = argparse.ArgumentParser()
    add_request_options(parser, Request)
    args = parser.parse_args(["--name", "n", "--colour", "red", "--colour", "blue",
                              "--mode", "b", "--depth", "3"])
    assert Request.model_validate(request_fields(args, Request)) == Request(
        name="n", colours=("red", "blue"), mode="b", inner=Inner(depth=3))
    assert [o.flag for o in options(Request)] == ["--name", "--colour", "--mode", "--depth"]
    assert list(flow_signature(Request).parameters) == ["name", "colours", "mode", "inner"]
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "c", "--name", "n"])
