"""BuildRequest, written once: the flow's parameters and the CLI's options come from it.

The UI form, `--param` of `prefect deployment run`, and `multiarch build --flag` used to
list the request's fields again by hand and drifted apart. Now the flow's signature and
docstring (from which Prefect makes the form) and the CLI's options are computed from the
model's fields: a new field is a new parameter and a new flag, with its description as
help, and the request's own validation gives every source the same error.

A field may carry `Cli(...)` metadata (Annotated) to pick its flag's name; otherwise the
flag is the field's name with dashes. Nested option models (runner, runner.kubernetes) are
flattened into flags; fields that are not scalars (placements) are left to the flow's
`runner` parameter.
"""

from __future__ import annotations

import argparse
import inspect
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from multiarch.textvalue import TextValue


@dataclass(frozen=True)
class Cli:
    """How a field appears on the command line when its name is not the right flag."""

    flag: str


def key_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not of the form KEY=VALUE")
    return name, value


def _optional_inner(annotation: Any) -> Any:
    """`X | None` -> X; anything else as is."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def parameter_type(annotation: Any) -> Any:
    """The type a flow parameter takes: written values (str for a platform or an image
    reference, lists for tuples); the request validates them afterwards."""
    inner = _optional_inner(annotation)
    if isinstance(inner, type) and issubclass(inner, TextValue):
        return str
    if get_origin(inner) is tuple:
        return list[parameter_type(get_args(inner)[0])]  # type: ignore[misc]
    return annotation


def flow_signature(model: type[BaseModel]) -> inspect.Signature:
    """One keyword parameter per field; collections and option models default to None."""
    parameters = []
    for name, field in model.model_fields.items():
        annotation = parameter_type(field.annotation)
        if field.is_required():
            default: Any = inspect.Parameter.empty
        elif field.default_factory is not None or field.default == ():
            annotation, default = annotation | None, None
        else:
            default = field.default
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                            annotation=annotation, default=default))
    return inspect.Signature(parameters)


def flow_docstring(summary: str, model: type[BaseModel]) -> str:
    """The flow's docstring with an Args section Prefect reads into the form's help."""
    lines = [summary, "", "Args:"]
    for name, field in model.model_fields.items():
        description = field.description or (
            field.annotation.__doc__ if isinstance(field.annotation, type) else "") or name
        lines.append(f"    {name}: {' '.join(description.split())}")
    return "\n".join(lines)


def request_from_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """Flow parameters -> the request's fields: a None stands for "the default"."""
    return {name: value for name, value in parameters.items() if value is not None}


# --- the command line --------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Option:
    path: tuple[str, ...]  # where the value goes in the request: ("runner", "work_dir")
    field: FieldInfo

    @property
    def dest(self) -> str:
        return "__".join(self.path)

    @property
    def flag(self) -> str:
        for meta in self.field.metadata:
            if isinstance(meta, Cli):
                return meta.flag
        return "--" + self.path[-1].replace("_", "-")


def options(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[Option]:
    """Every field a flag can set, nested option models flattened."""
    for name, field in model.model_fields.items():
        inner = _optional_inner(field.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel) \
                and not issubclass(inner, TextValue):
            yield from options(inner, (*prefix, name))
        elif _argparse_kwargs(field) is not None:
            yield Option(path=(*prefix, name), field=field)


def _argparse_kwargs(field: FieldInfo) -> dict[str, Any] | None:
    """How argparse reads the field, or None when no flag can express it."""
    inner = _optional_inner(field.annotation)
    origin = get_origin(inner)
    if inner is bool:
        return {"action": argparse.BooleanOptionalAction if field.default is True
                else "store_true"}
    if origin is Literal:
        return {"choices": [str(c) for c in get_args(inner)]}
    if inner is int:
        return {"type": int}
    if inner is str or (isinstance(inner, type) and issubclass(inner, TextValue)):
        return {}
    if origin is tuple:
        return {"action": "append"}
    if origin is dict and get_args(inner) == (str, str):
        return {"action": "append", "type": key_value, "metavar": "K=V"}
    return None


def add_request_options(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """One flag per field; unset flags are absent, so the model's defaults apply."""
    groups: dict[tuple[str, ...], argparse._ArgumentGroup] = {}
    for option in options(model):
        kwargs = _argparse_kwargs(option.field) or {}
        if "choices" not in kwargs and kwargs.get("action") not in ("store_true",
                                                                    argparse.BooleanOptionalAction):
            kwargs.setdefault("metavar", option.path[-1].upper())
        group_key = option.path[:-1]
        target: Any = parser
        if group_key:
            title = " ".join(group_key) + " options"
            target = groups.setdefault(group_key, parser.add_argument_group(title))
        target.add_argument(
            option.flag, dest=option.dest, default=argparse.SUPPRESS,
            required=option.field.is_required() and not group_key,
            help=" ".join((option.field.description or "").split()).replace("%", "%%"),
            **kwargs,
        )


def request_from_args(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """The flags given, as the request's (nested) fields."""
    given = vars(args)
    fields: dict[str, Any] = {}
    for option in options(model):
        if option.dest not in given:
            continue
        value = given[option.dest]
        if get_origin(_optional_inner(option.field.annotation)) is dict:
            value = dict(value)
        node = fields
        for part in option.path[:-1]:
            node = node.setdefault(part, {})
        node[option.path[-1]] = value
    return fields
