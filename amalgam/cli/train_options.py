"""The options several `train.py` commands share, and the checks on their values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields

import typer

from amalgam.cli.common import resolve_device
from amalgam.distill.engine.optim import DEFAULT_OPT, SCHEDULERS
from amalgam.distill.engine.train_config import STUDENT_AUGMENT, TrainConfig
from amalgam.errors import UserError
from amalgam.tasks.builtin import DEFAULT_TASK

TaskOpt = typer.Option(
    DEFAULT_TASK, "--task", help="built-in task (fashion-mini, fashion, A, B) or a task.toml"
)
QuietOpt = typer.Option(False, "--quiet", "-q", help="no progress bars or per-epoch lines")
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N")
DataDirOpt = typer.Option(None, "--data-dir", help="folder holding the task's data files")
ImgSizeOpt = typer.Option(None, "--img-size", help="input size (default: the task's)")
ValFracOpt = typer.Option(0.1, "--val-fraction", help="part of train held out for validation")
SchedulerOpt = typer.Option(
    "cosine", "--sched", "--scheduler",
    help=f"timm's schedule, stepped per epoch: {', '.join(SCHEDULERS)} "
    "(step is the seed's StepLR, see --scheduler-step and --scheduler-gamma)",
)
OptOpt = typer.Option(DEFAULT_OPT, "--opt", help="any timm optimiser (adam, adamw, sgd, lamb, lion, …)")
WeightDecayOpt = typer.Option(5e-4, "--weight-decay", "--weight_decay", help="L2 weight decay")
WarmupOpt = typer.Option(0, "--warmup-epochs", help="epochs of linear learning-rate warm-up (timm's)")
LogOpt = typer.Option(  # --logger: torchrun takes `--log` for an ambiguous prefix of its --log-dir
    "none", "--log", "--logger",
    help="per-epoch metrics and loss terms to: none, or tensorboard (the run folder)",
)
AugmentOpt = typer.Option(
    STUDENT_AUGMENT, "--augment",
    help="flip or none (teachers' outputs cached for each view), or crop-flip (teachers run online)"
)
TeacherPrecisionOpt = typer.Option(
    "auto", "--teacher-precision",
    help="frozen teachers: auto (bf16 where the CPU/GPU has it natively), fp32 or bf16",
)
LabelsOpt = typer.Option(
    "train", "--labels",
    help="train: methods may read the training labels; none: the training loss never reads one "
    "(label-free methods only; the task's unlabeled images join the training set); validation "
    "labels only choose the checkpoint and report",
)
ExtraTeacherOpt = typer.Option(
    [], "--extra-teacher", metavar="PATH",
    help="a trained model that teaches beside the task's teachers: a run folder (its best student) "
    "or a checkpoint; repeatable. An earlier label-free student makes this a second round (self-training)",
)
ExtraTeacherOnlyOpt = typer.Option(
    False, "--extra-teacher-only", help="the --extra-teacher models teach alone, without the task's teachers"
)
PerClassOpt = typer.Option(None, "--train-per-class", help="keep at most N training images per class")


def train_config(params: Mapping[str, object], **values: object) -> TrainConfig:
    """The TrainConfig a command's flags ask for: each of its parameters named after a
    TrainConfig field (`ctx.params`), then `values` (fields whose flag has another name), with
    the device resolved. Fields the command has no flag for keep TrainConfig's defaults, so a
    new field needs only a flag of the same name."""
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


def check_img_size(img_size: int | None) -> int | None:
    if img_size is not None and not 8 <= img_size <= 1024:
        raise UserError(f"--img-size must be between 8 and 1024, got {img_size}")
    return img_size
