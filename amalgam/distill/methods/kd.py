"""Hinton KD with the seed app's rule for partial teachers (kept for comparison)."""

from __future__ import annotations

import torch

from amalgam.distill.ensemble import correct_teachers, seed_rule_targets
from amalgam.distill.losses import kd_loss
from amalgam.distill.methods.base import Method, MethodOptions
from amalgam.tasks.spec import Roster


def filtered_seed_targets(teacher_logits: torch.Tensor, labels: torch.Tensor, roster: Roster,
                          options: MethodOptions) -> torch.Tensor:
    """The seed rule's targets at the options' temperature, from the teachers the filter keeps
    (the rule itself already keeps only covering teachers)."""
    allowed = None
    if options.teacher_filter == "correct":
        allowed = correct_teachers(teacher_logits, labels, roster)
    return seed_rule_targets(teacher_logits, labels, roster, options.temperature, allowed)


class SeedRuleKD(Method):
    name = "kd"
    options_used = ("temperature", "alpha", "teacher_filter")

    def loss_terms(self, student_logits, student_features, teacher, labels):
        targets = filtered_seed_targets(teacher.logits, labels, self.roster, self.options)
        return kd_loss(student_logits, targets, labels, self.options.temperature, self.options.alpha)
