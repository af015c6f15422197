"""SimKD (Chen et al., CVPR 2022) with one projector per partial teacher.

Each projector maps the student's features to one teacher's; that teacher's frozen
classifier is reused on the projection, and the teachers' outputs are combined over the
union of classes at inference. The student's own head is trained with CE as well, so the
saved student (own head) and the SimKD combination can both be scored.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from amalgam.distill.losses import common_size, match_spatial, simkd_loss
from amalgam.distill.losses.targets import combined_teacher_probs
from amalgam.distill.methods.base import Capabilities, Method, register_method


def projector(c_in: int, c_out: int, ratio: int) -> nn.Sequential:
    """1x1 → 3x3 → 1x1 convolutions, each followed by BN and ReLU; bottleneck c_out / ratio."""
    mid = max(1, c_out // ratio)
    return nn.Sequential(
        nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


@register_method
class SimKD(Method):
    name = "simkd"
    capabilities = Capabilities(options_used=("simkd_weight", "simkd_ratio"), needs_features=True)

    def setup(self, student_features: torch.Tensor, teacher_features: list[torch.Tensor],
              teachers: list[nn.Module]) -> None:
        c_s = student_features.shape[1]
        self.projectors = nn.ModuleList(
            projector(c_s, f.shape[1], self.options.simkd_ratio) for f in teacher_features
        ).to(student_features.device)
        self.frozen_teachers = list(teachers)  # a plain list: not trained, not saved with the method

    def loss_terms(self, student_logits, student_features, teacher, labels):
        projected = [proj(match_spatial(student_features, common_size(student_features, target)))
                     for proj, target in zip(self.projectors, teacher.features, strict=True)]
        return {"loss_ce": F.cross_entropy(student_logits, labels),
                "loss_simkd": self.options.simkd_weight * simkd_loss(projected, teacher.features)}

    def predict(self, student: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Reuse each teacher's classifier on its projection; combine over the union."""
        features = student.forward_features(x)
        width = self.roster.local_mask.shape[1]
        local = features.new_zeros(features.shape[0], len(self.projectors), width)
        for k, (proj, teacher) in enumerate(zip(self.projectors, self.frozen_teachers, strict=True)):
            logits = teacher.forward_head(proj(features))
            local[:, k, : logits.shape[1]] = logits.float()
        return combined_teacher_probs(local, self.roster).clamp_min(1e-12).log()
