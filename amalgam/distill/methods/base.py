"""What every distillation method provides to the trainer (mdistiller's shape, typed options)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from amalgam.errors import UserError
from amalgam.tasks.spec import Roster


@dataclass(frozen=True)
class MethodOptions:
    """All methods' hyper-parameters, each with the literature's default; recorded in config.json."""

    temperature: float = 4.0
    alpha: float = 0.5
    dkd_alpha: float = 1.0
    dkd_beta: float = 8.0
    # FitNet's hint weight, chosen by measurement on `fashion` (README, "Choosing defaults")
    hint_weight: float = 10.0
    simkd_weight: float = 1.0
    simkd_ratio: int = 2
    confidence_weighting: bool = False
    # which teachers a sample learns from: all, those that know its label, or those also right
    teacher_filter: str = "none"  # "none" | "covering" | "correct"

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise UserError(f"--alpha must be in [0, 1], got {self.alpha}")
        if not self.temperature > 0.0:
            raise UserError(f"--temperature must be > 0, got {self.temperature}")
        if min(self.dkd_alpha, self.dkd_beta, self.hint_weight, self.simkd_weight) < 0:
            raise UserError("--dkd-alpha, --dkd-beta, --hint-weight and --simkd-weight must be >= 0")
        if self.simkd_ratio < 1:
            raise UserError(f"--simkd-ratio must be >= 1, got {self.simkd_ratio}")
        if self.teacher_filter not in TEACHER_FILTERS:
            raise UserError(f"--teacher-filter must be one of {list(TEACHER_FILTERS)}, "
                            f"got {self.teacher_filter!r}")

    def to_dict(self) -> dict:
        return asdict(self)


TEACHER_FILTERS = ("none", "covering", "correct")


@dataclass
class TeacherOutputs:
    """Teachers' padded local logits [B, K, L], and feature maps when a method asks for them."""

    logits: torch.Tensor
    features: list[torch.Tensor] | None = None


class Method(nn.Module):
    """A distillation method: named loss terms from the student's and teachers' outputs.

    Methods own any trainable helpers (regressors, projectors); the trainer optimises them
    together with the student and never needs to know which method it runs.
    """

    name = "base"
    uses_teachers = True
    needs_features = False  # teachers' and student's feature maps, not only logits
    options_used: tuple[str, ...] = ()  # MethodOptions fields this method reads (others are ignored)

    def __init__(self, roster: Roster, options: MethodOptions):
        super().__init__()
        self.roster = roster
        self.options = options

    def setup(self, student: nn.Module, teachers: list[nn.Module], view: torch.Tensor) -> None:
        """Build trainable helpers once shapes are known (a dry run on one batch)."""

    def student_forward(self, student: nn.Module, x: torch.Tensor):
        if self.needs_features:
            features = student.forward_features(x)
            return student.forward_head(features), features
        return student(x), None

    def loss_terms(
        self,
        student_logits: torch.Tensor,
        student_features: torch.Tensor | None,
        teacher: TeacherOutputs | None,
        labels: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict(self, student: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return student(x)
