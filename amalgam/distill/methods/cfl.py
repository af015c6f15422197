"""Common Feature Learning (Luo et al., IJCAI 2019), for partial teachers that may overlap.

Small 1x1 adapters bring the student's and each teacher's last feature map to one width, and
one shared extractor (three residual blocks without BatchNorm, 256 → 128 channels) maps them
into a common space. There the student is pulled towards every teacher with a multi-kernel
MMD (`mmd_multi_kernel`), and a decoder per teacher must rebuild that teacher's feature map
from its common features, so the space cannot collapse to a constant. The logits learn from
`amalgam-kd` (the teachers combined over the union, no labels): the whole loss is
KD + `--cfl-weight` · (MMD + reconstruction), CFL's 1 : 10. Nothing reads a label.

The reconstruction is FitNet's normalised MSE (`hint_loss`: the fraction of the teacher's
feature energy missed), so one weight suits teachers of any activation scale. Maps are
compared at the smallest spatial size among the student and the teachers.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from amalgam.distill.losses import hint_loss, match_spatial, mmd_multi_kernel
from amalgam.distill.methods.amalgam_kd import AmalgamKD
from amalgam.distill.methods.base import Capabilities, Method, MethodOptions, register_method
from amalgam.distill.methods.sum_of_terms import SumOfTerms
from amalgam.errors import UserError
from amalgam.tasks.spec import Roster

ADAPTER_WIDTH = 256  # CFL's adapters map every network to this width ...
COMMON_WIDTH = 128  # ... and the shared extractor to this one


class ResidualBlock(nn.Module):
    """conv3x3 → ReLU → conv3x3 plus the input (1x1-projected when widths differ), then ReLU."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(c_out, c_out, 3, padding=1))
        self.shortcut = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def smallest_size(maps: list[torch.Tensor]) -> tuple[int, int]:
    return (min(m.shape[-2] for m in maps), min(m.shape[-1] for m in maps))


class CommonFeatures(Method):
    """CFL's feature terms alone (MMD in the common space, reconstruction); a part of `cfl`."""

    name = "cfl-features"
    capabilities = Capabilities(options_used=("cfl_weight",), needs_features=True, needs_labels=False)

    def __init__(self, roster: Roster, options: MethodOptions):
        super().__init__(roster, options)
        if options.cfl_weight < 0:
            raise UserError(f"--cfl-weight must be >= 0, got {options.cfl_weight}")

    def setup(self, student_features: torch.Tensor, teacher_features: list[torch.Tensor],
              teachers: list[nn.Module]) -> None:
        def adapter(c_in: int) -> nn.Module:
            return nn.Sequential(nn.Conv2d(c_in, ADAPTER_WIDTH, 1), nn.ReLU(inplace=True))

        self.student_adapter = adapter(student_features.shape[1])
        self.teacher_adapters = nn.ModuleList(adapter(f.shape[1]) for f in teacher_features)
        self.extractor = nn.Sequential(ResidualBlock(ADAPTER_WIDTH, COMMON_WIDTH),
                                       ResidualBlock(COMMON_WIDTH, COMMON_WIDTH),
                                       ResidualBlock(COMMON_WIDTH, COMMON_WIDTH))
        self.decoders = nn.ModuleList(nn.Conv2d(COMMON_WIDTH, f.shape[1], 1) for f in teacher_features)
        self.to(student_features.device)

    def loss_terms(self, student_logits, student_features, teacher, labels):
        size = smallest_size([student_features, *teacher.features])
        common_student = self.extractor(self.student_adapter(match_spatial(student_features, size)))
        mmd = student_features.new_zeros((), dtype=torch.float32)
        rebuilt = []
        for adapter, decoder, target in zip(self.teacher_adapters, self.decoders, teacher.features,
                                            strict=True):
            common_teacher = self.extractor(adapter(match_spatial(target, size)))
            mmd = mmd + mmd_multi_kernel(common_student, common_teacher)
            rebuilt.append(decoder(common_teacher))
        w = self.options.cfl_weight
        return {"loss_mmd": w * mmd, "loss_recon": w * hint_loss(rebuilt, teacher.features)}


register_method(SumOfTerms("cfl", (AmalgamKD, CommonFeatures)))
