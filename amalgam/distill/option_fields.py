"""A setting declared once: a dataclass field that is also a command-line flag, with its check.

`MethodOptions` and `TrainConfig` declare each of their settings with `option_field`: the
default, the help, any alias, the range or the choices its value must be in, the help panel
that lists it, and the commands whose default differs. The CLI builds its flags from these
fields (amalgam/cli/field_flags.py), and `check_fields` validates a built instance, so a bad
value fails at construction with a message naming its flag, whichever way it came: a flag, a
--config file, a run's config.json or a Python call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from amalgam.errors import UserError, one_of  # noqa: F401  (re-exported for the flag declarations)

# The help panels, in the order `--help` shows them (amalgam/cli/help_panels.py).
TASK_PANEL = "Task and data"
STUDENT_PANEL = "Student"
METHOD_PANEL = "Method"
TEACHERS_PANEL = "Teachers"
SCHEDULE_PANEL = "Schedule"
RUN_PANEL = "Run"
HARDWARE_PANEL = "Hardware"
PANELS = (TASK_PANEL, STUDENT_PANEL, METHOD_PANEL, TEACHERS_PANEL, SCHEDULE_PANEL, RUN_PANEL,
          HARDWARE_PANEL)


@dataclass(frozen=True)
class Range:
    """The numbers a setting accepts: `Range(low=0)` is >= 0, `Range(low=0, low_open=True)` > 0."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return ""


AT_LEAST_0 = Range(low=0)
AT_LEAST_1 = Range(low=1)
ABOVE_0 = Range(low=0, low_open=True)


def option_field(
    default: Any,
    help: str,
    *aliases: str,
    range: Range | None = None,
    choices: Iterable[str] | None = None,
    panel: str,
    command_defaults: Mapping[str, Any] | None = None,
    command_help: Mapping[str, str] | None = None,
    commands: Iterable[str] | None = None,
) -> Any:
    """A field that `check_fields` validates and the CLI offers as --<name-with-dashes>.

    `command_defaults`: a command's own default where it differs from `default` (`"*"`: every
    command's, e.g. `--device auto` where the library's default is cpu); `command_help` likewise.
    `commands`: the commands that offer the flag, where not every command that takes this
    dataclass should.
    """
    metadata = {
        "help": help,
        "aliases": aliases,
        "range": range,
        "choices": tuple(choices) if choices is not None else None,
        "panel": panel,
        "command_defaults": dict(command_defaults or {}),
        "command_help": dict(command_help or {}),
        "commands": tuple(commands) if commands is not None else None,
    }
    return field(default=default, metadata=metadata)


def flag_name(name: str) -> str:
    """The command-line flag of field `name`: `hint_weight` → `--hint-weight`."""
    return "--" + name.replace("_", "-")


def check_number(value: Any, flag: str, bounds: Range | None) -> None:
    """A float must be finite, and any number within `bounds`; else a UserError naming `flag`."""
    if bounds is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise UserError(f"{flag} must be a number {bounds}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{flag} must be a finite number{f' {bounds}' if bounds else ''}, got {value}")
    if bounds is not None and value not in bounds:
        raise UserError(f"{flag} must be {bounds}, got {value}")


def check_fields(instance: Any) -> None:
    """Raise a UserError naming the flag of the first field whose value is out of its bounds:
    a float that is not finite (nan and inf compare false with every bound, so they are named
    first), a number outside its `range`, or text that is not one of its `choices`."""
    for f in fields(instance):
        value = getattr(instance, f.name)
        flag = flag_name(f.name)
        choices = f.metadata.get("choices")
        check_number(value, flag, f.metadata.get("range"))
        if choices is not None and value not in choices:
            raise UserError(f"{flag} must be {one_of(choices)}; got {value!r}")
