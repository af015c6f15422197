"""The README's main job: teachers → CE baseline → distilled student → evaluation → summary."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from pathlib import Path

import torch
from rich.table import Table

from amalgam import PROJECT_ROOT
from amalgam.distill.engine.train_config import STUDENT_AUGMENT, TrainConfig
from amalgam.distill.methods import MethodOptions, build_method
from amalgam.distill.runs.run import DistilSettings, distil
from amalgam.distill.teachers.loading import load_ensemble
from amalgam.distill.teachers.training import train_all_teachers
from amalgam.errors import UserError
from amalgam.harness.evaluate import load_student, score_student
from amalgam.harness.grading import report_student
from amalgam.harness.teacher_scores import teacher_scores
from amalgam.models.checkpoint import atomic_write_bytes
from amalgam.tasks.builtin import get_task
from amalgam.tasks.loader import load_task_data
from amalgam.tasks.teacher_recipes import DEFAULT_TEACHER_RECIPE, teacher_training_data, with_teacher_recipe
from amalgam.ui import console, say
from amalgam.writable import check_writable


def run_pipeline(
    task: str,
    student: str,
    method: str,
    epochs: int,
    teacher_epochs: int,
    img_size: int | None,
    seed: int,
    train_per_class: int | None,
    data_dir: str | None,
    device: str,
    quiet: bool,
    root=PROJECT_ROOT,
    teacher_recipe: str = DEFAULT_TEACHER_RECIPE,
    method_options: MethodOptions | None = None,
    augment: str = STUDENT_AUGMENT,
) -> dict:
    """The whole job; `method_options` (default: the method's own) configure the distilled
    student only, the CE baseline reads no teacher. Both students see the same views
    (`augment`, on the same schedule), so the baseline is CE trained as long and as varied."""
    options = method_options or MethodOptions()
    spec = with_teacher_recipe(get_task(task), teacher_recipe)
    build_method(method, spec.roster(), options)  # an unknown --method or option fails before any work
    base, student_config = pipeline_configs(teacher_epochs, epochs, seed, device, quiet, augment)
    for folder, what in (("checkpoints", "teacher checkpoints"), ("runs", "runs"), ("evaluation", "reports")):
        check_writable(root / folder, what)  # all three before the teachers train, not after
    data = load_task_data(spec, data_dir, train_per_class=train_per_class)
    size = img_size or spec.img_size
    say(f"[bold]1/4[/] teachers of task {spec.name}", quiet)
    train_all_teachers(teacher_training_data(data, teacher_recipe, data_dir), base, size, root)
    results = {}
    for step, arm in ((2, "ce"), (3, method)):
        say(f"[bold]{step}/4[/] student {student} with method {arm}", quiet)
        settings = DistilSettings(
            task=task,
            student=student,
            method=arm,
            method_options=options if arm == method else MethodOptions(),
            train=student_config,
            img_size=img_size,
            data_dir=data_dir,
            run_name=f"pipeline_{arm}",
            train_per_class=train_per_class,
            teacher_recipe=teacher_recipe,
        )
        results[arm] = distil(settings, root=root, data=data)
    say("[bold]4/4[/] evaluation on the test split", quiet)
    torch_device = torch.device(device)
    distilled = load_student(results[method].run_dir / "best", spec.classes)
    report, out_dir = report_student(distilled, data, root / "evaluation" / spec.dir_name, torch_device)
    baseline = score_student(load_student(results["ce"].run_dir / "best", spec.classes), data, torch_device)
    ensemble = load_ensemble(spec, torch_device, root, (data.mean, data.std))
    teachers = teacher_scores(ensemble, data.test, torch_device)
    confusion = torch.tensor(report["confusion_matrix"])  # rows: true class, columns: predicted
    own_class_acc = {}
    for teacher in spec.teachers:
        idx = torch.tensor(spec.teacher_global_indices(teacher))
        own_class_acc[teacher.name] = float(confusion[idx, idx].sum() / confusion[idx].sum().clamp_min(1))
    summary = {
        "task": spec.name,
        "teacher_recipe": teacher_recipe,
        "method": method,
        "student": student,
        "teachers": teachers["per_teacher"],
        "teachers_union_accuracy": teachers["union_accuracy"],
        "teachers_uhc_accuracy": teachers["uhc_union_accuracy"],
        "student_accuracy": report["overall_accuracy"] / 100,
        "student_on_teacher_classes": own_class_acc,
        "ce_accuracy": baseline["accuracy"],
        "evaluation_dir": str(out_dir),
        "runs": {arm: str(r.run_dir) for arm, r in results.items()},
    }
    write_summary(summary, out_dir)
    return summary


def pipeline_configs(
    teacher_epochs: int, epochs: int, seed: int, device: str, quiet: bool, augment: str = STUDENT_AUGMENT
) -> tuple[TrainConfig, TrainConfig]:
    """Teacher and student settings, both checked before anything trains, naming the user's flags."""
    if teacher_epochs < 1:
        raise UserError(f"--teacher-epochs must be >= 1, got {teacher_epochs}")
    teachers = TrainConfig(
        epochs=teacher_epochs, lr=2e-3, seed=seed, augment="crop-flip", device=device, quiet=quiet
    )
    return teachers, replace(teachers, epochs=epochs, lr=1e-3, augment=augment)


SUMMARY_FILE = "pipeline_summary.csv"


def summary_rows(summary: dict) -> list[tuple[str, str, float]]:
    """(model, scored on, accuracy) in the order the job prints them; the distilled student last."""
    rows: list[tuple[str, str, float]] = []
    for name, acc in summary["teachers"].items():
        rows.append((name, "its own classes", acc))
        rows.append((f"  student ({summary['method']})", f"{name}'s classes",
                     summary["student_on_teacher_classes"][name]))
    rows.append(("teachers combined (mean)", "all classes", summary["teachers_union_accuracy"]))
    rows.append(("teachers combined (UHC)", "all classes", summary["teachers_uhc_accuracy"]))
    rows.append((f"student, CE baseline ({summary['student']})", "all classes", summary["ce_accuracy"]))
    rows.append((f"student, distilled ({summary['method']})", "all classes", summary["student_accuracy"]))
    return rows


def write_summary(summary: dict, out_dir: Path) -> Path:
    """The printed table as CSV beside the distilled student's report, so the figures a run
    printed can be kept (docs/benchmarks/data/demo.csv is this file)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("model", "scored on", "accuracy"))
    writer.writerows((model, scope, f"{acc:.2%}") for model, scope, acc in summary_rows(summary))
    target = out_dir / SUMMARY_FILE
    atomic_write_bytes(target, lambda path: path.write_text(buffer.getvalue()))
    return target


def print_summary(summary: dict) -> None:
    table = Table(title=f"task {summary['task']}: test accuracy (checkpoints chosen on validation)")
    table.add_column("model")
    table.add_column("scored on")
    table.add_column("accuracy", justify="right")
    rows = summary_rows(summary)
    for i, (model, scope, acc) in enumerate(rows):
        table.add_row(model, scope, f"{acc:.2%}", style="bold" if i == len(rows) - 1 else None)
    console.print(table)
