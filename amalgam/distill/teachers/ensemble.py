"""Frozen partial teachers run together, and their combination as one classifier.

Where their outputs sit in task space, and every target built from them, are pure
functions in amalgam/distill/losses/.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from amalgam.models.frozen import DTYPES, fold_batchnorm
from amalgam.models.model_input import ModelInput
from amalgam.tasks.spec import Roster


class TeacherEnsemble(nn.Module):
    """Runs every frozen teacher on one augmented view; outputs padded local logits [B,K,L]."""

    def __init__(self, teachers: list[nn.Module], inputs: list[ModelInput], roster: Roster):
        super().__init__()
        self.teachers = nn.ModuleList(teachers)
        self.inputs = inputs
        self.roster = roster
        self.precision = "fp32"  # dtype the teachers compute in
        self.channels_last = False
        self.folded = False  # BatchNorm folded into the convs
        for teacher in self.teachers:
            teacher.eval()
            teacher.requires_grad_(False)

    def for_inference(self, precision: str, channels_last: bool) -> TeacherEnsemble:
        """A faster copy for training-time targets: BatchNorm folded into convs, weights in
        `precision` ("fp32" or "bf16"), NHWC if asked. Logits still come out float32.

        A copy, so evaluation and SimKD's reused teacher heads keep the exact fp32 teachers.
        """
        teachers = [copy.deepcopy(teacher) for teacher in self.teachers]  # eval mode, as ours are
        for teacher in teachers:
            fold_batchnorm(teacher)
        fast = TeacherEnsemble(teachers, self.inputs, self.roster).to(dtype=DTYPES[precision])
        if channels_last:
            fast = fast.to(memory_format=torch.channels_last)
        fast.precision, fast.channels_last, fast.folded = precision, channels_last, True
        return fast

    @property
    def numerics(self) -> str:
        """How the logits are computed (rounding included), for cache keys."""
        folded = "-bn-folded" if self.folded else ""
        return f"{self.precision}{folded}{'-nhwc' if self.channels_last else ''}"

    def train(self, mode: bool = True) -> TeacherEnsemble:
        return super().train(False)  # frozen teachers keep BN and dropout in eval mode

    def forward(self, view: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            logits, _ = self._all_teachers(view, with_features=False)
        return logits.clone()  # a normal tensor again, so losses may save it for backward

    def forward_with_features(self, view: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits plus each teacher's last feature map (for FitNet / SimKD)."""
        with torch.inference_mode():
            logits, features = self._all_teachers(view, with_features=True)
        return logits.clone(), [f.clone() for f in features]

    def _all_teachers(self, view: torch.Tensor, with_features: bool):
        width = self.roster.local_mask.shape[1]
        out = view.new_zeros(view.shape[0], len(self.teachers), width)
        features = []
        prepared: dict[ModelInput, torch.Tensor] = {}
        for k, (teacher, model_input) in enumerate(zip(self.teachers, self.inputs, strict=True)):
            if model_input not in prepared:
                x = model_input(view).to(DTYPES[self.precision])
                layout = torch.channels_last if self.channels_last else torch.contiguous_format
                prepared[model_input] = x.contiguous(memory_format=layout)
            if with_features:
                feature_map = teacher.forward_features(prepared[model_input])
                features.append(feature_map.float())
                logits = teacher.forward_head(feature_map).float()
            else:
                logits = teacher(prepared[model_input]).float()
            out[:, k, : logits.shape[1]] = logits
        return out, features
