"""FitNet hints (Romero et al., ICLR 2015), one 1x1-conv regressor per teacher.

The student's last feature map is regressed onto each teacher's last feature map; hints
are class-agnostic, so every teacher gives one on every image.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from amalgam.distill.methods.base import Method
from amalgam.distill.methods.features import match_spatial


def hint_loss(student_features: torch.Tensor, teacher_features: list[torch.Tensor],
              regressors: nn.ModuleList) -> torch.Tensor:
    """Σ_k MSE(regressor_k(f_s) resized to f_t_k, f_t_k)."""
    total = student_features.new_zeros(())
    for regressor, target in zip(regressors, teacher_features, strict=True):
        guess = match_spatial(regressor(student_features), tuple(target.shape[-2:]))
        total = total + F.mse_loss(guess, target)
    return total


class FitNet(Method):
    name = "fitnet"
    options_used = ("hint_weight",)
    needs_features = True

    def setup(self, student_features: torch.Tensor, teacher_features: list[torch.Tensor],
              teachers: list[nn.Module]) -> None:
        c_s = student_features.shape[1]
        self.regressors = nn.ModuleList(
            nn.Conv2d(c_s, f.shape[1], kernel_size=1, bias=False) for f in teacher_features
        ).to(student_features.device)

    def loss_terms(self, student_logits, student_features, teacher, labels):
        return {
            "loss_ce": F.cross_entropy(student_logits, labels),
            "loss_hint": self.options.hint_weight * hint_loss(student_features, teacher.features,
                                                              self.regressors),
        }
