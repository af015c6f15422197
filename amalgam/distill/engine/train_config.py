"""The settings of one training run, checked when built, so a bad flag fails before any data
or teacher is loaded; recorded in config.json so a resume trains the same way.

Each field is declared once (amalgam/distill/option_fields.py): `train.py`, `train.py compare` and
`train.py teachers` build their flags from these fields, with each command's own default where
it differs (teachers train longer, faster and on random crops).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from amalgam.distill.engine.label_modes import LABEL_MODES
from amalgam.distill.engine.optim import DEFAULT_OPT, SCHEDULERS, check_opt
from amalgam.distill.engine.views import AUGMENTATIONS
from amalgam.distill.option_fields import (
    ABOVE_0,
    AT_LEAST_0,
    AT_LEAST_1,
    HARDWARE_PANEL,
    RUN_PANEL,
    SCHEDULE_PANEL,
    TASK_PANEL,
    TEACHERS_PANEL,
    Range,
    check_fields,
    one_of,
    option_field,
)
from amalgam.errors import UserError
from amalgam.models.frozen import TEACHER_PRECISIONS

# Students train on randomly flipped views by default: on `fashion` (README, "Choosing
# defaults") flips raised both CE and FitNet, while crop-flip left CE 5 points below flips
# after 12 epochs. A flip has two fixed views, so the teachers' outputs on both come from the
# cache (amalgam/distill/teachers/cache.py); random crops need the teachers online.
STUDENT_AUGMENT = "flip"
# The command that trains teachers, not a student: it reads no teacher and needs labels.
TEACHER_TRAINING = "teachers"
STUDENT_COMMANDS = ("distil", "compare", "pipeline")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = option_field(
        12, "epochs to train", "--num_epochs", "--num-epochs", range=AT_LEAST_1, panel=SCHEDULE_PANEL,
        command_defaults={TEACHER_TRAINING: 15, "pipeline": 15},
        command_help={TEACHER_TRAINING: "epochs to train (default: the --recipe's, 15; strong: 30)",
                      "distil": "epochs to train (default: the recipe's, 24, see configs/; 12 with --method)",
                      "pipeline": "student epochs, CE baseline and distilled (default: the recipe's, 24; "
                                    "15 with --method)"},
    )
    batch_size: int = option_field(64, "images per step", "-b", "--batch_size", range=Range(low=2),
                                   panel=SCHEDULE_PANEL)
    lr: float = option_field(1e-3, "learning rate", range=ABOVE_0, panel=SCHEDULE_PANEL,
                             command_defaults={TEACHER_TRAINING: 2e-3})
    weight_decay: float = option_field(5e-4, "L2 weight decay", "--weight_decay", range=AT_LEAST_0,
                                       panel=SCHEDULE_PANEL)
    scheduler: str = option_field(
        "cosine", f"timm's schedule, stepped per epoch, {one_of(SCHEDULERS)}; cosine decays to 0 over "
        "--epochs, step is the reference app's StepLR (--scheduler-step, --scheduler-gamma)",
        "--sched", choices=SCHEDULERS, panel=SCHEDULE_PANEL,
    )
    scheduler_step: int = option_field(30, "step: epochs between decays", "--scheduler_step",
                                       "--decay-epochs", range=AT_LEAST_1, panel=SCHEDULE_PANEL)
    scheduler_gamma: float = option_field(0.5, "step: factor at each decay", "--scheduler_gamma",
                                          "--decay-rate", range=Range(low=0, high=1, low_open=True),
                                          panel=SCHEDULE_PANEL)
    opt: str = option_field(DEFAULT_OPT, "any timm optimiser (adam, adamw, sgd, lamb, lion, …)",
                            panel=SCHEDULE_PANEL)
    warmup_epochs: int = option_field(0, "epochs of linear learning-rate warm-up (timm's)",
                                      range=AT_LEAST_0, panel=SCHEDULE_PANEL)
    seed: int = option_field(42, "random seed: weights, data order and augmentation", panel=RUN_PANEL)
    augment: str = option_field(
        STUDENT_AUGMENT, "training views, flip or none (teachers' outputs cached for each view), "
        "crop-flip (teachers run online on each crop) or crop-flip-cached (the student's crops, the "
        "teachers' cached outputs of the uncropped image as targets)", choices=AUGMENTATIONS,
        panel=TASK_PANEL,
        command_defaults={TEACHER_TRAINING: "crop-flip"},
    )
    device: str = option_field("cpu", "auto, cpu, cuda or cuda:N", panel=HARDWARE_PANEL,
                               command_defaults={"*": "auto"})
    quiet: bool = option_field(False, "no progress bars or per-epoch lines", "-q", panel=RUN_PANEL)
    # CUDA-only speed-ups for the student (no effect on CPU); compile is opt-in
    amp: bool = option_field(True, "bf16 autocast for the student on CUDA", panel=HARDWARE_PANEL)
    channels_last: bool = option_field(True, "channels-last memory layout on CUDA (the frozen teachers "
                                       "on any device)", panel=HARDWARE_PANEL)
    compile: bool = option_field(False, "torch.compile the student (opt-in)", panel=HARDWARE_PANEL)
    teacher_precision: str = option_field(
        "auto", "frozen teachers: auto (bf16 where the CPU/GPU has it natively), fp32 or bf16",
        choices=TEACHER_PRECISIONS, panel=TEACHERS_PANEL, commands=STUDENT_COMMANDS,
    )
    labels: str = option_field(
        "train", "train: methods may read the training labels; none: the training loss never reads one "
        "(label-free methods only; the task's unlabeled images join the training set); validation "
        "labels only choose the checkpoint and report", choices=LABEL_MODES, panel=TASK_PANEL,
        commands=STUDENT_COMMANDS,
        command_help={"distil": "train: methods may read the training labels; none: the training loss never "
                      "reads one (label-free methods only; the task's unlabeled images join the training "
                      "set; with no --method, the label-free recipe of configs/label-free.toml runs); "
                      "validation labels only choose the checkpoint and report"},
    )

    def __post_init__(self) -> None:
        check_fields(self)
        problem = check_opt(self.opt)
        if problem is not None:
            raise UserError(problem)

    def to_dict(self) -> dict:
        return asdict(self)
