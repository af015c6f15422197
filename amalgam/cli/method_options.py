"""The method hyper-parameter flags, generated from `MethodOptions`' fields (amalgam/cli/field_flags.py).

A command takes them as one parameter, `method_options: dict = METHOD_OPTION_FLAGS`, and is
decorated with `with_method_options`: Typer then sees one option per field in that place (its
flag, type, default and help from the field) and the command receives their values as a dict, to
validate with `MethodOptions(**method_options)` where it builds its settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields

import typer

from amalgam.cli.field_flags import METHOD_FLAGS, with_field_flags
from amalgam.distill.methods import METHODS, MethodOptions
from amalgam.distill.option_fields import flag_name
from amalgam.ui import say

METHOD_OPTION_FLAGS = METHOD_FLAGS  # the placeholder that `with_method_options` expands
method_flag = flag_name  # `hint_weight` → `--hint-weight`


def with_method_options(command: Callable) -> Callable:
    """`command` with its METHOD_OPTION_FLAGS parameter shown to Typer as one option per field.
    Every command that takes them offers the same flags with the same defaults."""
    return with_field_flags(MethodOptions, METHOD_OPTION_FLAGS, "method")(command)


def warn_unused_options(ctx: typer.Context, method: str) -> None:
    """Say which method options given on the command line this method does not read, so that
    e.g. `--temperature 3` with the default FitNet does not pass silently."""
    if method not in METHODS:
        return  # an unknown method fails with its own error
    used = METHODS[method].options_used
    unused = [f.name for f in fields(MethodOptions)
              if given_on_command_line(ctx, f.name) and f.name not in used]
    if method == "ce" and given_on_command_line(ctx, "alpha"):
        unused = [name for name in unused if name != "alpha"]  # --alpha 0 is how ce was chosen
    if unused:
        flags = ", ".join(map(method_flag, unused))
        say(f"[yellow]warning:[/] method {method} does not use {flags}; "
            f"it reads {', '.join(map(method_flag, used)) or 'no method options'} "
            "(for Hinton KD with the reference app's rule pass --method kd)")


def given_on_command_line(ctx: typer.Context, name: str) -> bool:
    """Typed by the user (not from --config, the environment or the default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"
