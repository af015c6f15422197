"""`python train.py`: distil a student (default), train teachers, or run the whole pipeline."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import typer

from amalgam.cli.config_file import ConfigOpt
from amalgam.cli.method_options import METHOD_OPTION_FLAGS, method_flag, with_method_options
from amalgam.cli.tasks_cli import tasks_command
from amalgam.cli.train_options import (
    AugmentOpt,
    DataDirOpt,
    DeviceOpt,
    ExtraTeacherOnlyOpt,
    ExtraTeacherOpt,
    ImgSizeOpt,
    LabelsOpt,
    LogOpt,
    OptOpt,
    PerClassOpt,
    QuietOpt,
    SchedulerOpt,
    TaskOpt,
    TeacherPrecisionOpt,
    ValFracOpt,
    WarmupOpt,
    WeightDecayOpt,
    check_img_size,
    check_non_negative,
    train_config,
)
from amalgam.cli.train_subcommands import (
    compare_command,
    export_command,
    pipeline_command,
    push_command,
    teachers_command,
)
from amalgam.distill.methods import DEFAULT_METHOD, METHODS, MethodOptions
from amalgam.distill.runs.folders import check_run_name
from amalgam.distill.runs.run import DistilSettings, distil, resume
from amalgam.distill.teachers.extra import resolve_extra_teachers
from amalgam.models.students import DEFAULT_STUDENT, STUDENT_HELP, canonical_student
from amalgam.ui import console, say

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # Click's help: long option names get their own line instead of "--…"
    help="Distil one student from several partial teachers.",
)

@app.callback(invoke_without_command=True)
@with_method_options
def distil_command(
    ctx: typer.Context,
    config: Path | None = ConfigOpt,  # eager: read first, it sets the other options' defaults
    task: str = TaskOpt,
    student: str = typer.Option(
        DEFAULT_STUDENT,
        "--student",
        "--model",
        "--student_model",
        "--student-model",
        help=STUDENT_HELP,
    ),
    method: str = typer.Option(DEFAULT_METHOD, "--method", help=f"one of {sorted(METHODS)}"),
    method_options: dict = METHOD_OPTION_FLAGS,  # --temperature, --alpha, …: one per MethodOptions field
    labels: str = LabelsOpt,
    extra_teachers: list[str] = ExtraTeacherOpt,  # named as in config.json, so --config reads it
    extra_teachers_only: bool = ExtraTeacherOnlyOpt,
    epochs: int = typer.Option(12, "--epochs", "--num_epochs", "--num-epochs"),
    batch_size: int = typer.Option(64, "--batch-size", "-b", "--batch_size"),
    lr: float = typer.Option(1e-3, "--lr"),
    weight_decay: float = WeightDecayOpt,
    opt: str = OptOpt,
    scheduler: str = SchedulerOpt,
    warmup_epochs: int = WarmupOpt,
    scheduler_step: int = typer.Option(
        30, "--scheduler-step", "--scheduler_step", "--decay-epochs", help="step: epochs between decays"
    ),
    scheduler_gamma: float = typer.Option(
        0.5, "--scheduler-gamma", "--scheduler_gamma", "--decay-rate", help="step: factor at each decay"
    ),
    seed: int = typer.Option(42, "--seed"),
    run: str = typer.Option(
        "", "--run-name", "--run",
        help="suffix for the run directory name (letters, digits, ., _, -); --run is the seed's "
        "spelling, which torchrun mistakes for its own --run-path",
    ),
    augment: str = AugmentOpt,
    img_size: int | None = ImgSizeOpt,
    val_fraction: float = ValFracOpt,
    train_per_class: int | None = PerClassOpt,
    data_dir: str | None = DataDirOpt,
    pretrained: bool = typer.Option(
        False, "--pretrained", help="start from the weights the student's name points to (as in timm)"
    ),
    device: str = DeviceOpt,
    out: Path | None = typer.Option(
        None, "--out", help="run directory (default runs/<time>_task_<T>[_<run>])"
    ),
    resume_dir: Path | None = typer.Option(None, "--resume", help="continue a stopped run directory"),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="also save state every N steps"),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the student (opt-in)"),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="bf16 autocast for the student on CUDA"),
    channels_last: bool = typer.Option(True, "--channels-last/--no-channels-last", help="on CUDA"),
    log: str = LogOpt,
    teacher_precision: str = TeacherPrecisionOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Distil a student from all of the task's teachers (`--alpha 0` or `--method ce`: no teachers)."""
    if ctx.invoked_subcommand is not None:
        return
    if resume_dir is not None:
        result = resume(resume_dir, epochs if _given(ctx, "epochs") else None, quiet)
        labels = result.trainer.config.labels
    else:
        settings = DistilSettings(
            task=task,
            student=canonical_student(student),
            method="ce" if method_options["alpha"] == 0 else method,
            method_options=MethodOptions(**method_options),
            train=train_config(ctx.params, compile=compile_model),
            img_size=check_img_size(img_size),
            val_fraction=val_fraction,
            train_per_class=train_per_class,
            data_dir=data_dir,
            pretrained=pretrained,
            run_name=check_run_name(run) if _given(ctx, "run") else run,  # `--run ""` too
            checkpoint_every=check_non_negative(checkpoint_every, "--checkpoint-every"),
            log=log,
            extra_teachers=resolve_extra_teachers(extra_teachers, extra_teachers_only),
            extra_teachers_only=extra_teachers_only,
        )
        _warn_unused_options(ctx, settings.method)
        if extra_teachers and settings.method in METHODS and not METHODS[settings.method].uses_teachers:
            say(f"[yellow]warning:[/] method {settings.method} reads no teacher; --extra-teacher is not used")
        result = distil(settings, out_dir=out)
    best = result.best
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun, rank 0 reports
    console.print(
        f"best epoch {best['epoch']} (chosen on validation): val acc {best['val_acc']:.2%}, "
        f"macro-F1 {best['val_macro_f1']:.3f} → {result.run_dir}"
    )
    if labels == "none":
        console.print("trained with --labels none: the training loss read no label; validation "
                      "labels were used only to choose this epoch and to report it")


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


app.command("teachers")(teachers_command)
app.command("pipeline")(pipeline_command)
app.command("tasks")(tasks_command)
app.command("compare")(compare_command)
app.command("export")(export_command)
app.command("push")(push_command)


def main() -> None:
    from amalgam.cli.common import run_cli

    run_cli(app)
