"""Frozen partial teachers, and pure functions that place their outputs in task space.

Teacher k outputs logits over its own classes; the roster's index tensors scatter them into
the task's global classes for a whole batch and all teachers at once.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from amalgam.models.frozen import DTYPES, fold_batchnorm
from amalgam.models.model_input import ModelInput
from amalgam.tasks.spec import Roster


def masked_local_softmax(local_logits: torch.Tensor, roster: Roster, temperature: float = 1.0):
    """Softmax over each teacher's real classes; padded slots get probability 0. [B,K,L]."""
    mask = roster.local_mask.to(local_logits.device)
    scaled = (local_logits / temperature).masked_fill(~mask, float("-inf"))
    return torch.softmax(scaled, dim=-1)


def place_in_task_space(local_values: torch.Tensor, roster: Roster) -> torch.Tensor:
    """[B, K, L] per-teacher values → [B, K, C], zeros at classes a teacher does not know."""
    b, k, _ = local_values.shape
    index = roster.local_to_global.to(local_values.device).expand(b, k, -1)
    mask = roster.local_mask.to(local_values.device)
    placed = local_values.new_zeros(b, k, roster.num_classes)
    return placed.scatter_add(2, index, local_values * mask)


def covering_teachers(labels: torch.Tensor, roster: Roster) -> torch.Tensor:
    """[B, K] bool: teacher k's classes include sample b's label."""
    return roster.coverage.to(labels.device)[:, labels].T


def seed_rule_targets(
    local_logits: torch.Tensor, labels: torch.Tensor, roster: Roster, temperature: float,
    allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """The seed app's soft labels, vectorised: average the teachers that cover the true class.

    Each covering teacher's softened probabilities go to their global indices; a class known
    to several covering teachers gets their mean. The result is renormalised to sum to 1 so
    it is a distribution for the KL term (it already is when one teacher covers the label).
    `allowed` [B, K] narrows the covering teachers further (e.g. to those that are correct);
    a sample left with none gets an all-zero row, which its caller must mask out.
    """
    coverage = roster.coverage.to(local_logits.device)  # [K, C]
    covering = covering_teachers(labels, roster).float()  # [B, K]
    if allowed is not None:
        covering = covering * allowed.float()
    probs = place_in_task_space(masked_local_softmax(local_logits, roster, temperature), roster)
    summed = (probs * covering[:, :, None]).sum(dim=1)  # [B, C]
    counts = covering @ coverage.float()  # [B, C]: covering teachers that know class c
    averaged = summed / counts.clamp_min(1.0)
    return averaged / averaged.sum(dim=1, keepdim=True).clamp_min(1e-12)


def combined_teacher_probs(local_logits: torch.Tensor, roster: Roster) -> torch.Tensor:
    """The teachers as one classifier over the union: per class, the mean of its teachers'
    probabilities. Used as the 'teachers combined' reference line in reports."""
    probs = place_in_task_space(masked_local_softmax(local_logits, roster), roster).sum(dim=1)
    counts = roster.coverage.to(local_logits.device).float().sum(dim=0)
    return probs / counts


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

def correct_teachers(local_logits: torch.Tensor, labels: torch.Tensor, roster: Roster) -> torch.Tensor:
    """[B, K] bool: the teacher knows the sample's class and ranks it first (seed 003's filter)."""
    masked = local_logits.masked_fill(~roster.local_mask.to(local_logits.device), float("-inf"))
    predicted = roster.local_to_global.to(local_logits.device).gather(
        1, masked.argmax(dim=2).T
    ).T  # [B, K] global index of each teacher's top class
    return covering_teachers(labels, roster) & (predicted == labels[:, None])
