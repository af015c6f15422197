"""At 80 columns nothing that matters is cut: option names in --help, the graded student's
path, a skipped task's reason, a teacher's checkpoint path (each on its own line)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

import amalgam
from amalgam.cli import eval_cli, tasks_cli, train_cli
from amalgam.harness.grading import GradeOutcome
from amalgam.tasks.builtin import get_task
from amalgam.tasks.spec import resolve_checkpoint_stem

WIDTH = 80


def narrow_console(monkeypatch: pytest.MonkeyPatch, module) -> io.StringIO:
    """The app's console (amalgam.ui: soft_wrap) as an 80-column terminal would size it."""
    buffer = io.StringIO()
    monkeypatch.setattr(module, "console", Console(width=WIDTH, file=buffer, soft_wrap=True))
    return buffer


def commands(app: typer.Typer) -> list[tuple[list[str], list[str]]]:
    """(argv to its --help, its long option names) for the app and each subcommand."""
    group = typer.main.get_command(app)
    found = [([], group)] + [([name], cmd) for name, cmd in getattr(group, "commands", {}).items()]
    return [(argv, [o for p in cmd.params if p.param_type_name == "option"
                    for o in (*p.opts, *p.secondary_opts) if o.startswith("--")]) for argv, cmd in found]


@pytest.mark.parametrize("app", [train_cli.app, eval_cli.app], ids=["train.py", "evaluation.py"])
def test_help_keeps_every_option_name_at_80_columns(app: typer.Typer):
    runner = CliRunner()
    for argv, options in commands(app):
        result = runner.invoke(app, [*argv, "--help"], env={"COLUMNS": str(WIDTH)}, terminal_width=WIDTH)
        assert result.exit_code == 0, result.output
        missing = [o for o in options if o not in result.output]
        assert not missing, (argv, missing, result.output)


def test_evaluation_table_leaves_paths_and_reasons_whole(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    buffer = narrow_console(monkeypatch, eval_cli)
    student = tmp_path / "runs" / "20261125-081500_task_TaskB_fitnet+partial-kd_a-long-run-name" / "best"
    report_dir = tmp_path / "evaluation" / "TaskB" / student.parent.name
    reason = ("could not download cas771-models from https://drive.google.com/uc?id=1H9VcBqfV3JmZFygA7erUPydAU5"
              f"XAxSh- (no answer within 30 s); download it by hand and put it at {tmp_path}/.cache/x.zip")
    results = {"overall_accuracy": 80.0, "macro_f1": 0.8, "ece": 0.05, "ece_ts": 0.02, "n_samples": 600,
               "model_path": str(student), "per_class_accuracy": {"zebra": 90.0, "lynx": 60.0}}

    outcomes = [GradeOutcome("B", results, report_dir=report_dir), GradeOutcome("A", None, reason)]
    eval_cli.print_results(outcomes)

    out = buffer.getvalue()
    assert f"task B: student {student}\n" in out
    assert f"task B: reports in {report_dir}\n" in out
    assert f"task A skipped: {reason}\n" in out
    table = out[: out.index("task B: student")]
    assert max(len(line) for line in table.splitlines()) <= WIDTH and "…" not in table


def test_roster_prints_checkpoint_paths_whole(monkeypatch: pytest.MonkeyPatch):
    buffer = narrow_console(monkeypatch, tasks_cli)
    spec = get_task("fashion-mini")

    tasks_cli.print_roster(spec)

    for teacher in spec.teachers:
        path = resolve_checkpoint_stem(spec, teacher, amalgam.PROJECT_ROOT)
        assert f"{teacher.name} checkpoint: {path}\n" in buffer.getvalue()
