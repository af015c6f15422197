"""`--help` reads at 80 columns: options grouped in panels, choices as words, nothing cut."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from amalgam.cli import eval_cli, train_cli
from amalgam.cli.help_panels import panels_of, render_panels
from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.methods import METHODS, MethodOptions
from amalgam.errors import UserError

WIDTH = 80
TITLE = re.compile(r"^╭─ (.+?) ─")


def help_of(app: typer.Typer, *argv: str) -> str:
    result = CliRunner().invoke(app, [*argv, "--help"], env={"COLUMNS": str(WIDTH)}, terminal_width=WIDTH)
    assert result.exit_code == 0, result.output
    return result.output


def panels_in(text: str) -> dict[str, str]:
    """Each panel's title → the text inside it."""
    panels: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        title = TITLE.match(line)
        if title:
            current = title.group(1)
            panels[current] = []
        elif line.startswith("╰"):
            current = None
        elif current is not None:
            panels[current].append(line)
    return {title: "\n".join(lines) for title, lines in panels.items()}


def all_commands() -> list[tuple[typer.Typer, list[str]]]:
    found = []
    for app in (train_cli.app, eval_cli.app):
        group = typer.main.get_command(app)
        found += [(app, [])] + [(app, [name]) for name in group.commands]
    return found


@pytest.mark.parametrize(("app", "argv"), all_commands(),
                         ids=lambda value: " ".join(value) if isinstance(value, list) else "")
def test_every_help_fits_80_columns_in_panels(app: typer.Typer, argv: list[str]):
    text = help_of(app, *argv)
    too_wide = [line for line in text.splitlines() if len(line) > WIDTH]
    assert not too_wide, too_wide
    assert panels_in(text), text  # at least one panel
    assert "['" not in text, "a list printed as Python"


def test_train_py_help_groups_its_options_by_what_they_set():
    panels = panels_in(help_of(train_cli.app))
    assert list(panels)[:3] == ["Task and data", "Student", "Method"]
    expected = {"Task and data": ["--task", "--augment", "--labels", "--data-dir"],
                "Student": ["--student", "--pretrained"],
                "Method": ["--method", "--temperature", "--alpha", "--hint-weight"],
                "Teachers": ["--extra-teacher", "--teacher-precision"],
                "Schedule": ["--epochs", "--lr", "--scheduler", "--weight-decay"],
                "Run": ["--seed", "--out", "--resume", "--run-name"],
                "Hardware": ["--device", "--amp"]}
    for panel, flags in expected.items():
        for flag in flags:
            assert re.search(rf"{re.escape(flag)}\b", panels[panel]), (panel, flag, panels[panel])
    assert "--epochs" not in panels["Method"] and "--temperature" not in panels["Schedule"]


def test_method_choices_read_as_words():
    text = " ".join(help_of(train_cli.app).split())  # the panel's wrapping undone
    assert "one of: " + ", ".join(sorted(METHODS)) in text.replace("│ ", "").replace(" │", "")


def test_a_choice_error_lists_the_choices_as_words():
    with pytest.raises(UserError) as caught:
        TrainConfig(scheduler="linear")
    expected = "--scheduler must be one of: cosine, step, tanh, poly, constant, none; got 'linear'"
    assert str(caught.value) == expected
    with pytest.raises(UserError, match="--teacher-filter must be one of: none, covering, correct; got 'x'"):
        MethodOptions(teacher_filter="x")


def test_flag_spellings_wrap_between_names_never_inside_one():
    rows = {"Schedule": [("--scheduler-gamma, --scheduler_gamma, --decay-rate <float>", "help " * 30)]}
    text = render_panels(rows, 60)
    for name in ("--scheduler-gamma", "--scheduler_gamma", "--decay-rate"):
        assert name in text, text
    assert max(len(line) for line in text.splitlines()) <= 60


def test_unpanelled_options_and_arguments_get_their_own_panels():
    group = typer.main.get_command(train_cli.app)
    export = group.commands["export"]
    ctx = export.make_context("export", ["run"], resilient_parsing=True)
    panels = panels_of(ctx, export.get_params(ctx))
    assert list(panels) == ["Arguments", "Options"]
