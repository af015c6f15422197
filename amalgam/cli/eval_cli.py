"""`python evaluation.py`: grade students on their tasks' test splits; `fetch` released assets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import typer
from rich.table import Table

from amalgam import PROJECT_ROOT
from amalgam.cli.help_panels import PanelCommand, PanelGroup
from amalgam.distill.engine.devices import resolve_device
from amalgam.distill.option_fields import HARDWARE_PANEL, RUN_PANEL, STUDENT_PANEL, TASK_PANEL
from amalgam.errors import UserError
from amalgam.tasks.builtin import released_tasks
from amalgam.ui import console

if TYPE_CHECKING:
    from amalgam.harness.grading import GradeOutcome

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None,  # Click's help, the options in our panels (help_panels.py)
                  help="Grade distilled students and fetch released assets.")
ManifestOpt = typer.Option(None, "--manifest",
                           help="asset manifest (default: amalgam/harness/release_manifest.toml)",
                           rich_help_panel=TASK_PANEL)
QuietOpt = typer.Option(False, "--quiet", "-q", help="no progress bars", rich_help_panel=RUN_PANEL)


@app.callback(invoke_without_command=True, cls=PanelGroup)
def evaluate_command(
    ctx: typer.Context,
    task: str | None = typer.Option(None, "--task", help="task to grade; default: CAS771 Task A and B",
                                    rich_help_panel=TASK_PANEL),
    checkpoint: str | None = typer.Option(None, "--checkpoint", help="student to grade (default: newest)",
                                          rich_help_panel=STUDENT_PANEL),
    fmt: str = typer.Option(
        "auto", "--format", help="auto, amalgam or cas771 (the CAS771 reference app's .pth)",
        rich_help_panel=STUDENT_PANEL,
    ),
    manifest: Path | None = ManifestOpt,
    data_dir: str | None = typer.Option(None, "--data-dir", help="folder holding the task's data files",
                                        rich_help_panel=TASK_PANEL),
    out: Path = typer.Option(PROJECT_ROOT / "evaluation", "--out", help="folder for the reports",
                             rich_help_panel=RUN_PANEL),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N",
                               rich_help_panel=HARDWARE_PANEL),
    quiet: bool = QuietOpt,
) -> None:
    """Grade one task (--task) or, with no task, fetch and grade CAS771 Task A and Task B."""
    from amalgam.harness.grading import grade_released_tasks, grade_task

    if ctx.invoked_subcommand is not None:
        return
    torch_device = torch.device(resolve_device(device))
    if task is not None:
        outcome = grade_task(task, checkpoint, fmt, manifest, data_dir, out, torch_device, quiet)
        print_results([replace(outcome, task=task)])
        return
    if checkpoint is not None:
        raise UserError("--checkpoint needs --task (which task is it a student of?)")
    outcomes = grade_released_tasks(released_tasks(), fmt, manifest, data_dir, out, torch_device, quiet)
    print_results(outcomes)
    if all(o.results is None for o in outcomes):
        raise UserError("no task could be graded (reasons above); fetch the assets or train a student")


def print_results(outcomes: list[GradeOutcome]) -> None:
    """Numbers in the table; paths and reasons below it, each on its own line, so that a narrow
    terminal wraps them instead of cutting them to "runs/2026…"."""
    table = Table(title="evaluation on the test split")
    for column in ("task", "accuracy", "macro-F1", "ECE (raw → scaled)", "images"):
        table.add_column(column, no_wrap=True)
    for o in outcomes:
        r = o.results
        if r is None:
            table.add_row(o.task, "skipped", "", "", "")
            continue
        table.add_row(o.task, f"{r['overall_accuracy']:.2f} %", f"{r['macro_f1']:.3f}",
                      f"{r['ece']:.3f} → {r['ece_ts']:.3f}", str(r["n_samples"]))
    console.print(table)
    for o in outcomes:
        if o.results is None:
            _line(f"task {o.task} skipped: {o.skipped or 'no reason given'}")
            continue
        worst = sorted(o.results["per_class_accuracy"].items(), key=lambda kv: kv[1])[:3]
        _line(f"task {o.task}: student {o.results['model_path']}")
        _line(f"task {o.task}: weakest classes " + ", ".join(f"{c} {a:.1f} %" for c, a in worst))
        if o.report_dir is not None:
            _line(f"task {o.task}: reports in {o.report_dir}")


def _line(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


@app.command("fetch", cls=PanelCommand)
def fetch_command(
    names: list[str] = typer.Argument(None, help="assets to fetch (default: all in the manifest)"),
    manifest: Path | None = ManifestOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Download, verify and unpack released assets listed in the manifest."""
    from amalgam.harness.assets import fetch

    for dest in fetch(names or None, manifest, PROJECT_ROOT, quiet=quiet):
        console.print(f"ready: {dest}")


def main() -> None:
    from amalgam.cli.common import run_cli

    run_cli(app)
