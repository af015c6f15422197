"""Hinton KD with the seed app's rule for partial teachers (kept for comparison)."""

from __future__ import annotations

from amalgam.distill.ensemble import correct_teachers, seed_rule_targets
from amalgam.distill.losses import kd_loss
from amalgam.distill.methods.base import Method


class SeedRuleKD(Method):
    name = "kd"
    options_used = ("temperature", "alpha", "teacher_filter")

    def loss_terms(self, student_logits, student_features, teacher, labels):
        t = self.options.temperature
        allowed = None
        if self.options.teacher_filter == "correct":
            allowed = correct_teachers(teacher.logits, labels, self.roster)
        targets = seed_rule_targets(teacher.logits, labels, self.roster, t, allowed)
        return kd_loss(student_logits, targets, labels, t, self.options.alpha)
