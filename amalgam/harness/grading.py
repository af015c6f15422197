"""Grade tasks end to end: make sure the data is there, pick the student, write the reports."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from amalgam import PROJECT_ROOT
from amalgam.errors import UserError
from amalgam.harness.assets import fetch_asset, is_present, load_manifest, released_student
from amalgam.harness.evaluate import LoadedStudent, evaluate_student, load_any_student, newest_student
from amalgam.harness.report_dirs import (
    check_latest_is_ours,
    claim_report_dir,
    discard_unfinished,
    point_latest,
)
from amalgam.models.export import resolve_source
from amalgam.tasks.builtin import get_task
from amalgam.tasks.loader import TaskData, load_task_data
from amalgam.tasks.spec import TaskSpec
from amalgam.writable import check_writable


@dataclass
class GradeOutcome:
    task: str
    results: dict | None
    skipped: str | None = None
    report_dir: Path | None = None  # where this grading's reports went


def ensure_task_assets(spec: TaskSpec, manifest: Path | None, root: Path, quiet: bool) -> list[str]:
    """Fetch what this task needs and is not yet on disk: the assets its spec names, and those
    the manifest lists for it (how a --manifest serves a task.toml).

    One asset failing does not stop the others (the data can still arrive when the models
    archive cannot); the failures are returned, for the caller to report if grading fails."""
    failures = []
    for asset in load_manifest(manifest):
        needed = asset.name in spec.released_assets or spec.name in asset.tasks
        if needed and not is_present(asset, root):
            try:
                fetch_asset(asset, root, quiet=quiet)
            except UserError as exc:
                failures.append(str(exc))
    return failures


def choose_student(spec: TaskSpec, checkpoint: str | None, manifest: Path | None, root: Path) -> Path:
    """--checkpoint, else the newest run's best student, else the released one in the manifest."""
    if checkpoint:
        path = Path(checkpoint)
        # a run folder, as `export`, `--resume` and `--extra-teacher` take it: its best student
        return resolve_source(path)[0] if path.is_dir() else path
    try:
        return newest_student(spec.name, root / "runs")
    except UserError:
        released = released_student(spec.name, manifest, root)
        if released is None:
            raise
        return released


def check_report_root(out_root: Path) -> None:
    """--out is a folder (made if missing) that takes files: checked before any download or scoring."""
    if out_root.exists() and not out_root.is_dir():
        raise UserError(f"--out {out_root} is a file, not a folder; pass a folder for the reports")
    check_writable(out_root, "reports")


def grade_task(task: str, checkpoint: str | None, fmt: str, manifest: Path | None, data_dir: str | None,
               out_root: Path, device: torch.device, quiet: bool, root: Path = PROJECT_ROOT,
               fetch_missing: bool = False) -> GradeOutcome:
    """Grade one student; its reports go to out_root/<task>/<student>/ (report_dirs)."""
    spec = get_task(task)
    check_report_root(out_root)
    task_root = out_root / spec.dir_name
    check_latest_is_ours(task_root)  # before any download or scoring
    failures = ensure_task_assets(spec, manifest, root, quiet) if fetch_missing else []
    try:
        data = load_task_data(spec, data_dir)
        student = load_any_student(choose_student(spec, checkpoint, manifest, root), spec.classes, fmt, data)
    except UserError as exc:
        if failures:  # the download that failed is the thing to fix, not its consequence
            raise UserError("; ".join(failures)) from exc
        raise
    results, report_dir = report_student(student, data, task_root, device)
    return GradeOutcome(spec.name, results, report_dir=report_dir)


def report_student(
    student: LoadedStudent, data: TaskData, task_root: Path, device: torch.device
) -> tuple[dict, Path]:
    """Grade into the student's own folder under task_root, then point latest.json at it."""
    report_dir = claim_report_dir(task_root, student.path)
    fresh = not any(report_dir.iterdir())
    try:
        results = evaluate_student(student, data, report_dir, device)
    except BaseException:
        if fresh:
            discard_unfinished(report_dir)
        raise
    point_latest(task_root, report_dir, results)
    return results, report_dir


def grade_released_tasks(tasks: list[str], fmt: str, manifest: Path | None, data_dir: str | None,
                         out_root: Path, device: torch.device, quiet: bool,
                         root: Path = PROJECT_ROOT) -> list[GradeOutcome]:
    """Grade each task; one that cannot run is reported as skipped with its reason."""
    check_report_root(out_root)  # a reason that is every task's: one error, not one skip per task
    outcomes = []
    for task in tasks:
        try:
            outcome = grade_task(task, None, fmt, manifest, data_dir, out_root, device, quiet, root,
                                 fetch_missing=True)
            outcomes.append(replace(outcome, task=task))
        except UserError as exc:
            outcomes.append(GradeOutcome(task, None, str(exc)))
    return outcomes
