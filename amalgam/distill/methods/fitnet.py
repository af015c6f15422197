"""FitNet hints (Romero et al., ICLR 2015), one 1x1-conv regressor per teacher.

The student's last feature map is regressed onto each teacher's last feature map; hints
are class-agnostic, so every teacher gives one on every image. `FitNetHints` is only the
hint term: `fitnet` is it plus CE, and `fitnet+<logit method>` is it plus that method's
terms (amalgam/distill/methods/__init__.py).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from amalgam.distill.losses import hint_loss
from amalgam.distill.methods.base import Capabilities, Method, register_method
from amalgam.distill.methods.ce import CrossEntropy
from amalgam.distill.methods.sum_of_terms import SumOfTerms


class FitNetHints(Method):
    """`hint_weight` times FitNet's hint loss; a part of a sum of terms, not a method alone."""

    name = "fitnet-hints"
    capabilities = Capabilities(
        options_used=("hint_weight",),
        needs_features=True,
        hint_features_only=True,  # the maps only enter hint_loss
        needs_labels=False,  # hints compare feature maps only
    )

    def setup(self, student_features: torch.Tensor, teacher_features: list[torch.Tensor],
              teachers: list[nn.Module]) -> None:
        c_s = student_features.shape[1]
        self.regressors = nn.ModuleList(
            nn.Conv2d(c_s, f.shape[1], kernel_size=1, bias=False) for f in teacher_features
        ).to(student_features.device)

    def loss_terms(self, student_logits, student_features, teacher, labels):
        regressed = [regressor(student_features) for regressor in self.regressors]
        return {"loss_hint": self.options.hint_weight * hint_loss(regressed, teacher.features)}


# FitNet proper: the student's own cross-entropy plus the hints
register_method(SumOfTerms("fitnet", (CrossEntropy, FitNetHints)))
