"""The method hyper-parameter flags, generated from `MethodOptions`' fields.

A command takes them as one parameter, `method_options: dict = METHOD_OPTION_FLAGS`, and is
decorated with `with_method_options`: Typer then sees one option per field in that place (its
flag, type, default and help from the field) and the command receives their values as a dict, to
validate with `MethodOptions(**method_options)` where it builds its settings.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import Field, fields

import typer

from amalgam.distill.methods import MethodOptions

METHOD_OPTION_FLAGS: typing.Any = object()  # the placeholder that `with_method_options` expands


def method_flag(name: str) -> str:
    """The command-line flag of the MethodOptions field `name`: `hint_weight` → `--hint-weight`."""
    return "--" + name.replace("_", "-")


def _option(field: Field) -> typer.models.OptionInfo:
    return typer.Option(
        field.default, method_flag(field.name), *field.metadata["aliases"], help=field.metadata["help"]
    )


def with_method_options(command: Callable) -> Callable:
    """`command` with its METHOD_OPTION_FLAGS parameter shown to Typer as one option per field."""
    signature = inspect.signature(command, eval_str=True)
    parameters = list(signature.parameters.values())
    (at,) = [i for i, parameter in enumerate(parameters) if parameter.default is METHOD_OPTION_FLAGS]
    placeholder = parameters[at]
    types = typing.get_type_hints(MethodOptions)
    flags = [
        inspect.Parameter(field.name, placeholder.kind, default=_option(field), annotation=types[field.name])
        for field in fields(MethodOptions)
    ]
    taken = {parameter.name for parameter in parameters} & {flag.name for flag in flags}
    assert not taken, f"{command.__name__} already has parameters named {taken}"

    @functools.wraps(command)
    def wrapper(**kwargs):
        values = {flag.name: kwargs.pop(flag.name) for flag in flags}
        return command(**kwargs, **{placeholder.name: values})

    wrapper.__signature__ = signature.replace(parameters=[*parameters[:at], *flags, *parameters[at + 1:]])
    return wrapper
