"""The method hyper-parameter flags, generated from `MethodOptions`' fields (amalgam/cli/field_flags.py).

A command takes them as one parameter, `method_options: dict = METHOD_OPTION_FLAGS`, and is
decorated with `with_method_options`: Typer then sees one option per field in that place (its
flag, type, default and help from the field) and the command receives their values as a dict, to
validate with `MethodOptions(**method_options)` where it builds its settings.
"""

from __future__ import annotations

from collections.abc import Callable

from amalgam.cli.field_flags import METHOD_FLAGS, with_field_flags
from amalgam.distill.methods import MethodOptions
from amalgam.distill.option_fields import flag_name

METHOD_OPTION_FLAGS = METHOD_FLAGS  # the placeholder that `with_method_options` expands
method_flag = flag_name  # `hint_weight` → `--hint-weight`


def with_method_options(command: Callable) -> Callable:
    """`command` with its METHOD_OPTION_FLAGS parameter shown to Typer as one option per field.
    Every command that takes them offers the same flags with the same defaults."""
    return with_field_flags(MethodOptions, METHOD_OPTION_FLAGS, "method")(command)
