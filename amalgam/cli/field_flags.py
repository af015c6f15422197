"""Command-line flags generated from a dataclass's fields (`option_field`, amalgam/distill/option_fields.py).

A command takes a dataclass's flags as one placeholder parameter, e.g. `train: dict = TRAIN_FLAGS`,
and is decorated with `with_field_flags(TrainConfig, TRAIN_FLAGS, "distil")`: Typer then sees one
option per field in that place (its flag, aliases, type, help, panel and this command's default)
and the command receives their values as a dict. Each setting is so declared once, in its field,
and every command that takes it spells it the same way.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Iterable
from dataclasses import Field, fields
from typing import Any

import typer

from amalgam.distill.option_fields import flag_name

TRAIN_FLAGS: Any = object()  # the placeholder for TrainConfig's flags
METHOD_FLAGS: Any = object()  # the placeholder for MethodOptions' flags


def command_default(field: Field, command: str) -> Any:
    """The default of `field`'s flag on `command`: the command's own, every command's, or the field's."""
    defaults = field.metadata["command_defaults"]
    return defaults.get(command, defaults.get("*", field.default))


def offered_fields(cls: type, command: str, only: Iterable[str] | None = None) -> list[Field]:
    """The fields of `cls` that `command` offers as flags (`only`: just these)."""
    wanted = set(only) if only is not None else None
    return [f for f in fields(cls)
            if (f.metadata["commands"] is None or command in f.metadata["commands"])
            and (wanted is None or f.name in wanted)]


def field_option(field: Field, command: str) -> Any:
    """The Typer option of `field` on `command`; a flag on by default also gets its --no- form."""
    default = command_default(field, command)
    name = flag_name(field.name)
    if isinstance(default, bool) and default:
        name = f"{name}/--no-{name.removeprefix('--')}"
    help_text = field.metadata["command_help"].get(command, field.metadata["help"])
    # a command's own help that states its default (e.g. a recipe's) replaces the bare value
    return typer.Option(default, name, *field.metadata["aliases"], help=help_text,
                        show_default="default:" not in help_text, rich_help_panel=field.metadata["panel"])


def with_field_flags(cls: type, placeholder: Any, command: str,
                     only: Iterable[str] | None = None) -> Callable[[Callable], Callable]:
    """A decorator: the command's `placeholder` parameter shown to Typer as one option per field of
    `cls` that `command` offers, whose values reach the command as one dict in that parameter."""
    chosen = offered_fields(cls, command, only)
    types = typing.get_type_hints(cls)

    def decorate(function: Callable) -> Callable:
        signature = inspect.signature(function, eval_str=True)
        parameters = list(signature.parameters.values())
        (at,) = [i for i, parameter in enumerate(parameters) if parameter.default is placeholder]
        kind = parameters[at].kind
        flags = [inspect.Parameter(f.name, kind, default=field_option(f, command), annotation=types[f.name])
                 for f in chosen]
        taken = {parameter.name for parameter in parameters} & {flag.name for flag in flags}
        assert not taken, f"{function.__name__} already has parameters named {taken}"

        @functools.wraps(function)
        def wrapper(**kwargs):
            values = {flag.name: kwargs.pop(flag.name) for flag in flags}
            return function(**kwargs, **{parameters[at].name: values})

        wrapper.__signature__ = signature.replace(parameters=[*parameters[:at], *flags, *parameters[at + 1:]])
        return wrapper

    return decorate
