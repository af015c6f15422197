"""Grade tasks end to end: make sure the data is there, pick the student, write the reports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from amalgam import PROJECT_ROOT
from amalgam.errors import UserError
from amalgam.harness.assets import fetch_asset, is_present, load_manifest, released_student
from amalgam.harness.evaluate import evaluate_student, load_any_student, newest_student
from amalgam.tasks.builtin import get_task
from amalgam.tasks.loader import load_task_data
from amalgam.tasks.spec import TaskSpec


@dataclass
class GradeOutcome:
    task: str
    results: dict | None
    skipped: str | None = None


def ensure_task_assets(spec: TaskSpec, manifest: Path | None, root: Path, quiet: bool) -> None:
    """Fetch what this task needs and is not yet on disk: the assets its spec names, and those
    the manifest lists for it (how a --manifest serves a task.toml)."""
    for asset in load_manifest(manifest):
        needed = asset.name in spec.released_assets or spec.name in asset.tasks
        if needed and not is_present(asset, root):
            fetch_asset(asset, root, quiet=quiet)


def choose_student(spec: TaskSpec, checkpoint: str | None, manifest: Path | None, root: Path) -> Path:
    """--checkpoint, else the newest run's best student, else the released one in the manifest."""
    if checkpoint:
        return Path(checkpoint)
    try:
        return newest_student(spec.name, root / "runs")
    except UserError:
        released = released_student(spec.name, manifest, root)
        if released is None:
            raise
        return released


def grade_task(task: str, checkpoint: str | None, fmt: str, manifest: Path | None, data_dir: str | None,
               out_root: Path, device: torch.device, quiet: bool, root: Path = PROJECT_ROOT,
               fetch_missing: bool = False) -> dict:
    spec = get_task(task)
    if fetch_missing:
        ensure_task_assets(spec, manifest, root, quiet)
    data = load_task_data(spec, data_dir)
    student = load_any_student(choose_student(spec, checkpoint, manifest, root), spec.classes, fmt, data)
    return evaluate_student(student, data, out_root / spec.dir_name, device)


def grade_released_tasks(tasks: list[str], fmt: str, manifest: Path | None, data_dir: str | None,
                         out_root: Path, device: torch.device, quiet: bool,
                         root: Path = PROJECT_ROOT) -> list[GradeOutcome]:
    """Grade each task; one that cannot run is reported as skipped with its reason."""
    outcomes = []
    for task in tasks:
        try:
            results = grade_task(task, None, fmt, manifest, data_dir, out_root, device, quiet, root,
                                 fetch_missing=True)
            outcomes.append(GradeOutcome(task, results))
        except UserError as exc:
            outcomes.append(GradeOutcome(task, None, str(exc)))
    return outcomes
