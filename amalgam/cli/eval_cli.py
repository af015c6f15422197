"""`python evaluation.py`: grade students on their tasks' test splits; `fetch` released assets."""

from __future__ import annotations

from pathlib import Path

import torch
import typer
from rich.table import Table

from amalgam import PROJECT_ROOT
from amalgam.cli.common import resolve_device
from amalgam.errors import UserError
from amalgam.tasks.builtin import released_tasks
from amalgam.ui import console

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                  help="Grade distilled students and fetch released assets.")
ManifestOpt = typer.Option(None, "--manifest",
                           help="asset manifest (default: amalgam/harness/release_manifest.toml)")


@app.callback(invoke_without_command=True)
def evaluate_command(
    ctx: typer.Context,
    task: str | None = typer.Option(None, "--task", help="task to grade; default: CAS771 Task A and B"),
    checkpoint: str | None = typer.Option(None, "--checkpoint", help="student to grade (default: newest)"),
    fmt: str = typer.Option(
        "auto", "--format", help="auto, amalgam or cas771 (alias seed: the CAS771 reference app's .pth)"
    ),
    manifest: Path | None = ManifestOpt,
    data_dir: str | None = typer.Option(None, "--data-dir"),
    out: Path = typer.Option(PROJECT_ROOT / "evaluation", "--out", help="folder for the reports"),
    device: str = typer.Option("auto", "--device"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Grade one task (--task) or, with no task, fetch and grade CAS771 Task A and Task B."""
    from amalgam.harness.grading import grade_released_tasks, grade_task

    if ctx.invoked_subcommand is not None:
        return
    torch_device = torch.device(resolve_device(device))
    if task is not None:
        results = grade_task(task, checkpoint, fmt, manifest, data_dir, out, torch_device, quiet)
        print_results([(task, results, None)])
        return
    if checkpoint is not None:
        raise UserError("--checkpoint needs --task (which task is it a student of?)")
    outcomes = grade_released_tasks(released_tasks(), fmt, manifest, data_dir, out, torch_device, quiet)
    print_results([(o.task, o.results, o.skipped) for o in outcomes])
    if all(o.results is None for o in outcomes):
        raise UserError("no task could be graded (reasons above); fetch the assets or train a student")


def print_results(rows: list[tuple[str, dict | None, str | None]]) -> None:
    table = Table(title="evaluation on the test split")
    for column in ("task", "accuracy", "macro-F1", "ECE (raw → scaled)", "images", "student / reason"):
        table.add_column(column)
    for task, results, skipped in rows:
        if results is None:
            table.add_row(task, "skipped", "", "", "", skipped or "")
            continue
        table.add_row(task, f"{results['overall_accuracy']:.2f} %", f"{results['macro_f1']:.3f}",
                      f"{results['ece']:.3f} → {results['ece_ts']:.3f}", str(results["n_samples"]),
                      results["model_path"])
    console.print(table)
    for task, results, _ in rows:
        if results is not None:
            worst = sorted(results["per_class_accuracy"].items(), key=lambda kv: kv[1])[:3]
            console.print(f"task {task}: weakest classes " + ", ".join(f"{c} {a:.1f} %" for c, a in worst))


@app.command("fetch")
def fetch_command(
    names: list[str] = typer.Argument(None, help="assets to fetch (default: all in the manifest)"),
    manifest: Path | None = ManifestOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Download, verify and unpack released assets listed in the manifest."""
    from amalgam.harness.assets import fetch

    for dest in fetch(names or None, manifest, PROJECT_ROOT, quiet=quiet):
        console.print(f"ready: {dest}")


def main() -> None:
    from amalgam.cli.common import run_cli

    run_cli(app)
