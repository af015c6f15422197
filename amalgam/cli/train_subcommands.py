"""`train.py teachers | pipeline | compare | export`: each parses its options and calls one workflow.

The workflow modules are imported inside each command, so `train.py --help` and a plain
distillation run do not load what only one other command needs.
"""

from __future__ import annotations

from pathlib import Path

import typer

from amalgam.cli.common import resolve_device
from amalgam.cli.method_options import METHOD_OPTION_FLAGS, with_method_options
from amalgam.cli.train_options import (
    AugmentOpt,
    DataDirOpt,
    DeviceOpt,
    ImgSizeOpt,
    PerClassOpt,
    QuietOpt,
    SchedulerOpt,
    TaskOpt,
    TeacherPrecisionOpt,
    ValFracOpt,
    check_img_size,
)
from amalgam.distill.methods import DEFAULT_METHOD, METHODS, MethodOptions
from amalgam.distill.trainer import TrainConfig
from amalgam.models.students import DEFAULT_STUDENT, canonical_student
from amalgam.ui import console, say


def teachers_command(
    task: str = TaskOpt,
    epochs: int = typer.Option(15, "--epochs", "--num_epochs"),
    batch_size: int = typer.Option(64, "--batch-size", "--batch_size"),
    lr: float = typer.Option(2e-3, "--lr"),
    seed: int = typer.Option(42, "--seed"),
    augment: str = typer.Option("crop-flip", "--augment"),
    img_size: int | None = ImgSizeOpt,
    val_fraction: float = ValFracOpt,
    train_per_class: int | None = PerClassOpt,
    data_dir: str | None = DataDirOpt,
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Train each teacher on its own classes; saves checkpoints/<task>/teacher_<k>."""
    from amalgam.distill.teacher_training import train_task_teachers

    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        augment=augment,
        device=resolve_device(device),
        quiet=quiet,
    )
    reports = train_task_teachers(
        task, data_dir, val_fraction, train_per_class, config, check_img_size(img_size)
    )
    if not reports:
        console.print("nothing to train: every teacher of the task has a checkpoint of its own")
    for report in reports:
        console.print(
            f"{report.name}: {report.test_accuracy:.2%} test accuracy on its "
            f"{len(report.classes)} classes ({', '.join(report.classes)})"
        )


def pipeline_command(
    task: str = TaskOpt,
    student: str = typer.Option(DEFAULT_STUDENT, "--student", "--student_model"),
    method: str = typer.Option(DEFAULT_METHOD, "--method"),
    epochs: int = typer.Option(15, "--epochs", help="student epochs (CE baseline and distilled)"),
    teacher_epochs: int = typer.Option(10, "--teacher-epochs"),
    img_size: int | None = ImgSizeOpt,
    train_per_class: int | None = PerClassOpt,
    seed: int = typer.Option(42, "--seed"),
    data_dir: str | None = DataDirOpt,
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Teachers → CE baseline → distilled student → evaluation, then one summary table."""
    from amalgam.pipeline import print_summary, run_pipeline

    summary = run_pipeline(
        task=task,
        student=canonical_student(student),
        method=method,
        epochs=epochs,
        teacher_epochs=teacher_epochs,
        img_size=check_img_size(img_size),
        seed=seed,
        train_per_class=train_per_class,
        data_dir=data_dir,
        device=resolve_device(device),
        quiet=quiet,
    )
    print_summary(summary)
    say(f"reports in {summary['evaluation_dir']}")


@with_method_options
def compare_command(
    task: str = TaskOpt,
    methods: str = typer.Option(",".join(METHODS), "--methods", help="comma-separated"),
    seeds: int = typer.Option(3, "--seeds", help="runs per method (seeds seed, seed+1, …)"),
    student: str = typer.Option(DEFAULT_STUDENT, "--student", "--student_model"),
    epochs: int = typer.Option(12, "--epochs", "--num_epochs"),
    batch_size: int = typer.Option(64, "--batch-size", "--batch_size"),
    lr: float = typer.Option(1e-3, "--lr"),
    scheduler: str = SchedulerOpt,
    method_options: dict = METHOD_OPTION_FLAGS,  # --temperature, --alpha, …: one per MethodOptions field
    augment: str = AugmentOpt,
    img_size: int | None = ImgSizeOpt,
    train_per_class: int | None = PerClassOpt,
    seed: int = typer.Option(42, "--seed"),
    data_dir: str | None = DataDirOpt,
    out: Path | None = typer.Option(None, "--out", help="report folder (default reports/<task>)"),
    device: str = DeviceOpt,
    teacher_precision: str = TeacherPrecisionOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Train every method with the same budget over several seeds; write reports/<task>/compare.*."""
    from amalgam.compare import parse_methods, run_compare

    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        scheduler=scheduler,
        seed=seed,
        augment=augment,
        device=resolve_device(device),
        quiet=quiet,
        teacher_precision=teacher_precision,
    )
    options = MethodOptions(**method_options)
    report = run_compare(
        task,
        parse_methods(methods),
        seeds,
        canonical_student(student),
        options,
        config,
        check_img_size(img_size),
        train_per_class,
        data_dir,
        out_dir=out,
    )
    for name, stats in report["methods"].items():
        console.print(
            f"{name:>11}: accuracy {stats['accuracy']['mean']:.2%} ± {stats['accuracy']['std']:.2%}, "
            f"ECE after T-scaling {stats['ece_ts']['mean']:.3f}"
        )
    console.print(f"teachers combined: {report['teachers_union_accuracy']:.2%}")
    for name, failures in report["failed"].items():
        console.print(
            f"[red]{name} failed[/] on {len(failures)} seed(s): {failures[0]['error']}", markup=True
        )


def export_command(
    run_dir: Path = typer.Argument(..., help="run directory (exports its best student) or a checkpoint stem"),
    fmt: str = typer.Option("onnx", "--format", help="onnx or torchscript"),
    out: Path | None = typer.Option(None, "--out", help="file to write (default RUN_DIR/student.<ext>)"),
    report: bool = typer.Option(True, "--report/--no-report", help="measure params, size and CPU latency"),
) -> None:
    """Write the best student as one ONNX or TorchScript file with its classes and preprocessing inside."""
    from amalgam.harness.model_report import export_and_report

    export_and_report(run_dir, fmt, out, report)
