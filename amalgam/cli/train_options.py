"""The options several `train.py` commands share, and the checks on their values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields

import typer

from amalgam.distill.engine.devices import resolve_device
from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.methods import DEFAULT_METHOD, METHODS
from amalgam.distill.option_fields import (
    METHOD_PANEL,
    RUN_PANEL,
    STUDENT_PANEL,
    TASK_PANEL,
    TEACHERS_PANEL,
    Range,
    check_number,
    one_of,
)
from amalgam.errors import UserError
from amalgam.models.students import DEFAULT_STUDENT, STUDENT_HELP
from amalgam.tasks.builtin import DEFAULT_TASK

# TrainConfig's and MethodOptions' flags are generated from their fields (amalgam/cli/field_flags.py);
# these are the options of the commands themselves, each declared once for every command.
TaskOpt = typer.Option(
    DEFAULT_TASK, "--task", help="built-in task (fashion-mini, fashion, A, B) or a task.toml",
    rich_help_panel=TASK_PANEL,
)
DataDirOpt = typer.Option(None, "--data-dir", help="folder holding the task's data files",
                          rich_help_panel=TASK_PANEL)
ImgSizeOpt = typer.Option(None, "--img-size", help="input size (default: the task's)",
                          rich_help_panel=TASK_PANEL)
ValFracOpt = typer.Option(0.1, "--val-fraction", help="part of train held out for validation",
                          rich_help_panel=TASK_PANEL)
StudentOpt = typer.Option(
    DEFAULT_STUDENT, "--student", "--model", "--student_model", "--student-model", help=STUDENT_HELP,
    rich_help_panel=STUDENT_PANEL,
)
MethodOpt = typer.Option(DEFAULT_METHOD, "--method", help=one_of(sorted(METHODS)),
                         rich_help_panel=METHOD_PANEL)
LogOpt = typer.Option(  # --logger: torchrun takes `--log` for an ambiguous prefix of its --log-dir
    "none", "--log", "--logger",
    help="per-epoch metrics and loss terms to: none, or tensorboard (the run folder)",
    rich_help_panel=RUN_PANEL,
)
ExtraTeacherOpt = typer.Option(
    [], "--extra-teacher", metavar="PATH",
    help="a trained model that teaches beside the task's teachers: a run folder (its best student) "
    "or a checkpoint; repeatable. An earlier label-free student makes this a second round (self-training)",
    rich_help_panel=TEACHERS_PANEL,
)
ExtraTeacherOnlyOpt = typer.Option(
    False, "--extra-teacher-only", help="the --extra-teacher models teach alone, without the task's teachers",
    rich_help_panel=TEACHERS_PANEL,
)
TeacherRecipeOpt = typer.Option(
    "default", "--teacher-recipe",
    help="which trained teachers: default (checkpoints/<task>/), strong (wider, trained longer, "
    "checkpoints/<task>/teachers-strong/) or more-data (1,500 more images per class, fashion-mini; "
    "checkpoints/<task>/teachers-more-data/); `train.py teachers --recipe NAME` trains them",
    rich_help_panel=TEACHERS_PANEL,
)
PerClassOpt = typer.Option(None, "--train-per-class", help="keep at most N training images per class",
                           rich_help_panel=TASK_PANEL)


def train_config(params: Mapping[str, object], **values: object) -> TrainConfig:
    """The TrainConfig a command's flags ask for: each of its parameters named after a
    TrainConfig field (`ctx.params`, the flags `with_field_flags` generates), then `values`
    (settings the command decides itself), with the device resolved. Fields the command offers
    no flag for keep TrainConfig's defaults."""
    names = {f.name for f in fields(TrainConfig)}
    given = {name: value for name, value in params.items() if name in names}
    given.update(values)
    if "device" in given:
        given["device"] = resolve_device(str(given["device"]))
    return TrainConfig(**given)


def check_non_negative(value: int, flag: str) -> int:
    if value < 0:
        raise UserError(f"{flag} must be >= 0, got {value}")
    return value


def check_teacher_recipe(name: str) -> str:
    from amalgam.tasks.teacher_recipes import teacher_recipe

    return teacher_recipe(name).name


def check_fraction(value: float, flag: str) -> float:
    """A share of something: a finite number strictly between 0 and 1."""
    check_number(value, flag, Range(low=0, high=1, low_open=True, high_open=True))
    return value


def check_img_size(img_size: int | None) -> int | None:
    if img_size is not None and not 8 <= img_size <= 1024:
        raise UserError(f"--img-size must be between 8 and 1024, got {img_size}")
    return img_size
