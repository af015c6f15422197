"""`python train.py`: distil a student (default), train teachers, or run the whole pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from amalgam.cli.config_file import ConfigOpt
from amalgam.cli.field_flags import TRAIN_FLAGS, with_field_flags
from amalgam.cli.help_panels import PanelCommand, PanelGroup
from amalgam.cli.method_options import (
    METHOD_OPTION_FLAGS,
    given_on_command_line,
    warn_unused_options,
    with_method_options,
)
from amalgam.cli.recipe_flags import apply_recipe
from amalgam.cli.tasks_cli import tasks_command
from amalgam.cli.train_options import (
    DataDirOpt,
    ExtraTeacherOnlyOpt,
    ExtraTeacherOpt,
    ImgSizeOpt,
    LogOpt,
    MethodOpt,
    PerClassOpt,
    StudentOpt,
    TaskOpt,
    TeacherRecipeOpt,
    ValFracOpt,
    check_fraction,
    check_img_size,
    check_non_negative,
    check_teacher_recipe,
    train_config,
)
from amalgam.cli.train_subcommands import (
    compare_command,
    export_command,
    pipeline_command,
    push_command,
    teachers_command,
)
from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.methods import METHODS, MethodOptions
from amalgam.distill.option_fields import RUN_PANEL, STUDENT_PANEL
from amalgam.distill.runs.folders import check_run_name
from amalgam.distill.runs.run import DistilSettings, distil, resume
from amalgam.distill.teachers.extra import resolve_extra_teachers
from amalgam.models.students import canonical_student
from amalgam.ui import console, say

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # Click's help, with the options in panels of our own (help_panels.py)
    help="Distil one student from several partial teachers.",
)

@app.callback(invoke_without_command=True, cls=PanelGroup)
@with_method_options
@with_field_flags(TrainConfig, TRAIN_FLAGS, "distil")
def distil_command(
    ctx: typer.Context,
    config: Path | None = ConfigOpt,  # eager: read first, it sets the other options' defaults
    task: str = TaskOpt,
    student: str = StudentOpt,
    method: str = MethodOpt,
    method_options: dict = METHOD_OPTION_FLAGS,  # --temperature, --alpha, …: one per MethodOptions field
    extra_teachers: list[str] = ExtraTeacherOpt,  # named as in config.json, so --config reads it
    extra_teachers_only: bool = ExtraTeacherOnlyOpt,
    teacher_recipe: str = TeacherRecipeOpt,
    train: dict = TRAIN_FLAGS,  # --epochs, --lr, --seed, …: one per TrainConfig field
    run: str = typer.Option(
        "", "--run-name", "--run",
        help="suffix for the run directory name (letters, digits, ., _, -); --run is the reference "
        "app's spelling, which torchrun mistakes for its own --run-path", rich_help_panel=RUN_PANEL,
    ),
    img_size: int | None = ImgSizeOpt,
    val_fraction: float = ValFracOpt,
    train_per_class: int | None = PerClassOpt,
    data_dir: str | None = DataDirOpt,
    pretrained: bool = typer.Option(
        False, "--pretrained", help="start from the weights the student's name points to (as in timm)",
        rich_help_panel=STUDENT_PANEL,
    ),
    out: Path | None = typer.Option(
        None, "--out", help="run directory (default runs/<time>_task_<T>[_<run>])", rich_help_panel=RUN_PANEL,
    ),
    resume_dir: Path | None = typer.Option(None, "--resume", help="continue a stopped run directory",
                                           rich_help_panel=RUN_PANEL),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="also save state every N steps",
                                         rich_help_panel=RUN_PANEL),
    log: str = LogOpt,
) -> None:
    """Distil a student from all of the task's teachers (`--alpha 0` or `--method ce`: no teachers).

    Without --method it runs the default recipe for any setting not given: configs/default.toml
    (96 epochs, crop-flip-cached views), or with --labels none configs/label-free.toml."""
    if ctx.invoked_subcommand is not None:
        return
    if resume_dir is not None:
        epochs = train["epochs"] if given_on_command_line(ctx, "epochs") else None
        result = resume(resume_dir, epochs, train["quiet"])
        labels = result.trainer.config.labels
    else:
        labels = train["labels"]
        method = apply_recipe(ctx, method, labels, train, method_options)  # `--labels none` alone: label-free
        settings = DistilSettings(
            task=task,
            student=canonical_student(student),
            method="ce" if method_options["alpha"] == 0 else method,
            method_options=MethodOptions(**method_options),
            train=train_config(train),
            img_size=check_img_size(img_size),
            val_fraction=check_fraction(val_fraction, "--val-fraction"),
            train_per_class=train_per_class,
            data_dir=data_dir,
            pretrained=pretrained,
            run_name=check_run_name(run) if given_on_command_line(ctx, "run") else run,  # `--run ""` too
            checkpoint_every=check_non_negative(checkpoint_every, "--checkpoint-every"),
            log=log,
            extra_teachers=resolve_extra_teachers(extra_teachers, extra_teachers_only),
            extra_teachers_only=extra_teachers_only,
            teacher_recipe=check_teacher_recipe(teacher_recipe),
        )
        warn_unused_options(ctx, settings.method)
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



app.command("teachers", cls=PanelCommand)(teachers_command)
app.command("pipeline", cls=PanelCommand)(pipeline_command)
app.command("tasks", cls=PanelCommand)(tasks_command)
app.command("compare", cls=PanelCommand)(compare_command)
app.command("export", cls=PanelCommand)(export_command)
app.command("push", cls=PanelCommand)(push_command)


def main() -> None:
    from amalgam.cli.common import run_cli

    run_cli(app)
