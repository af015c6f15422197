"""Decoupled KD (Zhao et al., CVPR 2022) on the teachers' combined target.

The target is the covering teachers' average over the task (as `kd` uses), so DKD's
target-class and non-target-class parts are defined for partial teachers too. As in
mdistiller, both DKD terms can ramp up linearly over the first `--dkd-warmup` epochs (its
CIFAR recipe: 20), so the large β·T² non-target term does not swamp CE while the student is
still random.
"""

from __future__ import annotations

from amalgam.distill.losses import dkd_loss, filtered_covering_targets
from amalgam.distill.methods.base import Capabilities, Method, register_method


@register_method
class DecoupledKD(Method):
    name = "dkd"
    capabilities = Capabilities(
        options_used=("temperature", "dkd_alpha", "dkd_beta", "dkd_warmup", "teacher_filter")
    )

    def loss_terms(self, student_logits, student_features, teacher, labels):
        o = self.options
        targets = filtered_covering_targets(teacher.logits, labels, self.roster, o.temperature,
                                            o.teacher_filter)
        ramp = warmup_factor(self.epochs_done, o.dkd_warmup)
        return dkd_loss(student_logits, targets, labels, o.temperature, ramp * o.dkd_alpha, ramp * o.dkd_beta)


def warmup_factor(epochs_done: int, warmup_epochs: float) -> float:
    """mdistiller's ramp, min(epoch / warmup, 1) with epochs counted from 1; 1 without warm-up."""
    return 1.0 if warmup_epochs <= 0 else min((epochs_done + 1) / warmup_epochs, 1.0)
