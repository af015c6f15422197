"""Decoupled KD (Zhao et al., CVPR 2022) on the teachers' combined target.

The target is the covering teachers' average over the task (as `kd` uses), so DKD's
target-class and non-target-class parts are defined for partial teachers too.
"""

from __future__ import annotations

from amalgam.distill.losses import dkd_loss, filtered_covering_targets
from amalgam.distill.methods.base import Method, register_method


@register_method
class DecoupledKD(Method):
    name = "dkd"
    options_used = ("temperature", "dkd_alpha", "dkd_beta", "teacher_filter")

    def loss_terms(self, student_logits, student_features, teacher, labels):
        o = self.options
        targets = filtered_covering_targets(teacher.logits, labels, self.roster, o.temperature,
                                            o.teacher_filter)
        return dkd_loss(student_logits, targets, labels, o.temperature, o.dkd_alpha, o.dkd_beta)
