"""Hinton KD with the reference app's rule for partial teachers (kept for comparison):
the target averages the teachers that cover the image's class."""

from __future__ import annotations

from amalgam.distill.losses import filtered_covering_targets, kd_loss
from amalgam.distill.methods.base import Capabilities, Method, register_method


@register_method
class CoveringTeachersKD(Method):
    name = "kd"
    capabilities = Capabilities(options_used=("temperature", "alpha", "teacher_filter"))

    def loss_terms(self, student_logits, student_features, teacher, labels):
        o = self.options
        targets = filtered_covering_targets(teacher.logits, labels, self.roster, o.temperature,
                                            o.teacher_filter)
        return kd_loss(student_logits, targets, labels, o.temperature, o.alpha)
