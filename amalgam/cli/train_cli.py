"""`python train.py`: distil a student (default), train teachers, or run the whole pipeline."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import typer

from amalgam.cli.common import resolve_device
from amalgam.cli.method_options import METHOD_OPTION_FLAGS, method_flag, with_method_options
from amalgam.cli.tasks_cli import tasks_command
from amalgam.distill.methods import DEFAULT_METHOD, METHODS, MethodOptions
from amalgam.distill.run import DistilSettings, distil, resume
from amalgam.distill.run_dirs import check_run_name
from amalgam.distill.trainer import STUDENT_AUGMENT, TrainConfig
from amalgam.errors import UserError
from amalgam.models.students import DEFAULT_STUDENT, canonical_student
from amalgam.tasks.builtin import DEFAULT_TASK, get_task
from amalgam.tasks.loader import load_task_data
from amalgam.ui import console, say

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Distil one student from several partial teachers.",
)

TaskOpt = typer.Option(
    DEFAULT_TASK, "--task", help="built-in task (fashion-mini, fashion, A, B) or a task.toml"
)
QuietOpt = typer.Option(False, "--quiet", "-q", help="no progress bars or per-epoch lines")
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N")
DataDirOpt = typer.Option(None, "--data-dir", help="folder holding the task's data files")
ImgSizeOpt = typer.Option(None, "--img-size", help="input size (default: the task's)")
ValFracOpt = typer.Option(0.1, "--val-fraction", help="part of train held out for validation")
SchedulerOpt = typer.Option(
    "cosine", "--scheduler", help="cosine, or step (the seed's StepLR: --scheduler-step/--scheduler-gamma)"
)
AugmentOpt = typer.Option(
    STUDENT_AUGMENT, "--augment", help="flip, crop-flip, or none (a fixed view: teachers' logits cached)"
)
TeacherPrecisionOpt = typer.Option(
    "auto", "--teacher-precision",
    help="frozen teachers: auto (bf16 where the CPU/GPU has it natively), fp32 or bf16",
)
PerClassOpt = typer.Option(None, "--train-per-class", help="keep at most N training images per class")


@app.callback(invoke_without_command=True)
@with_method_options
def distil_command(
    ctx: typer.Context,
    task: str = TaskOpt,
    student: str = typer.Option(
        DEFAULT_STUDENT,
        "--student",
        "--student_model",
        "--student-model",
        help="mobilenetv3, mobilenetv3_small, efficientnet, resnet18",
    ),
    method: str = typer.Option(DEFAULT_METHOD, "--method", help=f"one of {sorted(METHODS)}"),
    method_options: dict = METHOD_OPTION_FLAGS,  # --temperature, --alpha, …: one per MethodOptions field
    epochs: int = typer.Option(12, "--epochs", "--num_epochs", "--num-epochs"),
    batch_size: int = typer.Option(64, "--batch-size", "--batch_size"),
    lr: float = typer.Option(1e-3, "--lr"),
    weight_decay: float = typer.Option(5e-4, "--weight-decay", "--weight_decay"),
    scheduler: str = SchedulerOpt,
    scheduler_step: int = typer.Option(30, "--scheduler-step", "--scheduler_step"),
    scheduler_gamma: float = typer.Option(0.5, "--scheduler-gamma", "--scheduler_gamma"),
    seed: int = typer.Option(42, "--seed"),
    run: str = typer.Option(
        "", "--run", help="suffix for the run directory name (letters, digits, ., _, -)"
    ),
    augment: str = AugmentOpt,
    img_size: int | None = ImgSizeOpt,
    val_fraction: float = ValFracOpt,
    train_per_class: int | None = PerClassOpt,
    data_dir: str | None = DataDirOpt,
    pretrained: bool = typer.Option(False, "--pretrained", help="start from timm's ImageNet weights"),
    device: str = DeviceOpt,
    out: Path | None = typer.Option(
        None, "--out", help="run directory (default runs/<time>_task_<T>[_<run>])"
    ),
    resume_dir: Path | None = typer.Option(None, "--resume", help="continue a stopped run directory"),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="also save state every N steps"),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the student (opt-in)"),
    teacher_precision: str = TeacherPrecisionOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Distil a student from all of the task's teachers (`--alpha 0` or `--method ce`: no teachers)."""
    if ctx.invoked_subcommand is not None:
        return
    if resume_dir is not None:
        result = resume(resume_dir, epochs if _given(ctx, "epochs") else None, quiet)
    else:
        settings = DistilSettings(
            task=task,
            student=canonical_student(student),
            method="ce" if method_options["alpha"] == 0 else method,
            method_options=MethodOptions(**method_options),
            train=TrainConfig(
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                weight_decay=weight_decay,
                scheduler=scheduler,
                scheduler_step=scheduler_step,
                scheduler_gamma=scheduler_gamma,
                seed=seed,
                augment=augment,
                device=resolve_device(device),
                quiet=quiet,
                compile=compile_model,
                teacher_precision=teacher_precision,
            ),
            img_size=_check_img_size(img_size),
            val_fraction=val_fraction,
            train_per_class=train_per_class,
            data_dir=data_dir,
            pretrained=pretrained,
            run_name=check_run_name(run) if _given(ctx, "run") else run,  # `--run ""` too
            checkpoint_every=_check_non_negative(checkpoint_every, "--checkpoint-every"),
        )
        _warn_unused_options(ctx, settings.method)
        result = distil(settings, out_dir=out)
    best = result.best
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun, rank 0 reports
    console.print(
        f"best epoch {best['epoch']} (chosen on validation): val acc {best['val_acc']:.2%}, "
        f"macro-F1 {best['val_macro_f1']:.3f} → {result.run_dir}"
    )


def _warn_unused_options(ctx: typer.Context, method: str) -> None:
    """Say which method options given on the command line this method does not read, so that
    e.g. `--temperature 3` with the default FitNet does not pass silently."""
    if method not in METHODS:
        return  # an unknown method fails with its own error
    used = METHODS[method].options_used
    unused = [f.name for f in fields(MethodOptions) if _given(ctx, f.name) and f.name not in used]
    if method == "ce" and _given(ctx, "alpha"):
        unused = [name for name in unused if name != "alpha"]  # --alpha 0 is how ce was chosen
    if unused:
        flags = ", ".join(map(method_flag, unused))
        say(f"[yellow]warning:[/] method {method} does not use {flags}; "
            f"it reads {', '.join(map(method_flag, used)) or 'no method options'} "
            "(for Hinton KD with the seed's rule pass --method kd)")


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _check_non_negative(value: int, flag: str) -> int:
    if value < 0:
        raise UserError(f"{flag} must be >= 0, got {value}")
    return value


def _check_img_size(img_size: int | None) -> int | None:
    if img_size is not None and not 8 <= img_size <= 1024:
        raise UserError(f"--img-size must be between 8 and 1024, got {img_size}")
    return img_size


@app.command("teachers")
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
    from amalgam.distill.teachers import train_all_teachers

    spec = get_task(task)
    data = load_task_data(spec, data_dir, val_fraction, train_per_class)
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        augment=augment,
        device=resolve_device(device),
        quiet=quiet,
    )
    reports = train_all_teachers(data, config, _check_img_size(img_size) or spec.img_size)
    if not reports:
        console.print("nothing to train: every teacher of the task has a checkpoint of its own")
    for report in reports:
        console.print(
            f"{report.name}: {report.test_accuracy:.2%} test accuracy on its "
            f"{len(report.classes)} classes ({', '.join(report.classes)})"
        )


@app.command("pipeline")
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
        img_size=_check_img_size(img_size),
        seed=seed,
        train_per_class=train_per_class,
        data_dir=data_dir,
        device=resolve_device(device),
        quiet=quiet,
    )
    print_summary(summary)
    say(f"reports in {summary['evaluation_dir']}")


app.command("tasks")(tasks_command)


@app.command("compare")
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
        _check_img_size(img_size),
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


@app.command("export")
def export_command(
    run_dir: Path = typer.Argument(..., help="run directory (exports its best student) or a checkpoint stem"),
    fmt: str = typer.Option("onnx", "--format", help="onnx or torchscript"),
    out: Path | None = typer.Option(None, "--out", help="file to write (default RUN_DIR/student.<ext>)"),
    report: bool = typer.Option(True, "--report/--no-report", help="measure params, size and CPU latency"),
) -> None:
    """Write the best student as one ONNX or TorchScript file with its classes and preprocessing inside."""
    from amalgam.harness.model_report import export_report, print_model_report
    from amalgam.models.export import export_student, read_export_metadata

    path = export_student(run_dir, fmt, out)
    params = read_export_metadata(path)["params"]
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {params:,} params)")
    if report:
        rows, notes, saved = export_report(run_dir, path)
        print_model_report(rows, notes)
        say(f"report in {saved}")


def main() -> None:
    from amalgam.cli.common import run_cli

    run_cli(app)
