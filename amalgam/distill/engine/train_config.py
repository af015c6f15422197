"""The settings of one training run, checked when built, so a bad flag fails before any data
or teacher is loaded; recorded in config.json so a resume trains the same way."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from amalgam.distill.engine.label_modes import LABEL_MODES
from amalgam.distill.engine.optim import DEFAULT_OPT, SCHEDULERS, check_opt
from amalgam.distill.engine.views import AUGMENTATIONS
from amalgam.errors import UserError
from amalgam.models.frozen import TEACHER_PRECISIONS

# Students train on randomly flipped views by default: on `fashion` (README, "Choosing
# defaults") flips raised both CE and FitNet, while crop-flip left CE 5 points below flips
# after 12 epochs. A flip has two fixed views, so the teachers' outputs on both come from the
# cache (amalgam/distill/teachers/cache.py); random crops need the teachers online.
STUDENT_AUGMENT = "flip"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 5e-4
    scheduler: str = "cosine"  # timm's, to 0 over `epochs`; step: the reference app's StepLR
    scheduler_step: int = 30
    scheduler_gamma: float = 0.5
    opt: str = DEFAULT_OPT  # any timm optimiser name (amalgam/distill/engine/optim.py)
    warmup_epochs: int = 0
    seed: int = 42
    augment: str = STUDENT_AUGMENT
    device: str = "cpu"
    quiet: bool = False
    # CUDA-only speed-ups for the student (no effect on CPU); compile is opt-in
    amp: bool = True
    channels_last: bool = True  # the student on CUDA; the frozen teachers on any device
    compile: bool = False
    # frozen teachers: auto = bf16 where the hardware has native bf16 (see models/frozen.py)
    teacher_precision: str = "auto"
    # train: the method may read training labels; none: it is handed none (label_modes.py)
    labels: str = "train"

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 2, f"--batch-size must be >= 2, got {self.batch_size}"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (self.scheduler in SCHEDULERS, f"--scheduler must be one of {list(SCHEDULERS)}"),
            (self.scheduler_step >= 1, f"--scheduler-step must be >= 1, got {self.scheduler_step}"),
            (check_opt(self.opt) is None, check_opt(self.opt)),
            (self.warmup_epochs >= 0, f"--warmup-epochs must be >= 0, got {self.warmup_epochs}"),
            (0 < self.scheduler_gamma <= 1, "--scheduler-gamma must be in (0, 1]"),
            (self.augment in AUGMENTATIONS, f"--augment must be one of {list(AUGMENTATIONS)}"),
            (self.teacher_precision in TEACHER_PRECISIONS,
             f"--teacher-precision must be one of {list(TEACHER_PRECISIONS)}"),
            (self.labels in LABEL_MODES, f"--labels must be one of {list(LABEL_MODES)}, got {self.labels!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def to_dict(self) -> dict:
        return asdict(self)
