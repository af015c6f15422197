"""`--help` in Rich panels, one per `rich_help_panel` (task and data, student, method, …).

Typer's own Rich help puts every spelling of a flag in one unwrapped column and cuts it at 80
columns ("--student,--model,…"); here each panel is a two-column table whose first column
wraps between a flag's spellings, never inside one, so every flag name stays readable and
searchable. The usage line and the description stay Click's. The commands use these classes
through `cls=` (`PanelGroup` for an app's callback, `PanelCommand` for a subcommand).
"""

from __future__ import annotations

import io
from typing import Any

from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from amalgam.distill.option_fields import PANELS

OTHER_PANEL = "Options"
ARGUMENTS_PANEL = "Arguments"
MIN_NAME_COLUMN = 22


def panels_of(ctx: Any, params: list[Any]) -> dict[str, list[tuple[str, str]]]:
    """Each panel's (names, help) rows: the arguments, then PANELS in order, any other, Options."""
    rows: dict[str, list[tuple[str, str]]] = {}
    for param in params:
        record = param.get_help_record(ctx)
        if record is None:
            continue  # hidden
        if param.param_type_name == "argument":
            panel = ARGUMENTS_PANEL
        else:
            panel = getattr(param, "rich_help_panel", None) or OTHER_PANEL
        rows.setdefault(panel, []).append(record)
    known = (ARGUMENTS_PANEL, *PANELS, OTHER_PANEL)
    order = [ARGUMENTS_PANEL, *PANELS, *[p for p in rows if p not in known], OTHER_PANEL]
    return {panel: rows[panel] for panel in order if panel in rows}


def render_panels(panels: dict[str, list[tuple[str, str]]], width: int) -> str:
    """The panels as plain text (box drawing, no colour) `width` columns wide."""
    longest = max((len(word) for rows in panels.values() for names, _ in rows for word in names.split()),
                  default=0)
    name_width = max(MIN_NAME_COLUMN, longest)
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, highlight=False, emoji=False,
                      legacy_windows=False)
    for title, rows in panels.items():
        table = Table(box=None, show_header=False, expand=True, padding=(0, 1, 0, 0), pad_edge=False)
        table.add_column(width=name_width, no_wrap=False, overflow="fold")
        table.add_column(ratio=1, overflow="fold")
        for names, help_text in rows:
            table.add_row(Text(names), Text(help_text))
        console.print(Panel(table, title=title, title_align="left", box=box.ROUNDED, expand=True))
    return out.getvalue()


def _format_panels(command: Any, ctx: Any, formatter: Any) -> None:
    text = render_panels(panels_of(ctx, command.get_params(ctx)), formatter.width)
    formatter.write("\n" + text)


class PanelCommand(TyperCommand):
    """A subcommand whose options `--help` lists in panels."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        _format_panels(self, ctx, formatter)


class PanelGroup(TyperGroup):
    """An app's callback whose options `--help` lists in panels, then its subcommands."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        _format_panels(self, ctx, formatter)
        self.format_commands(ctx, formatter)
