"""Partial-teacher KD (Unifying Heterogeneous Classifiers, Vongkulbhisal et al., CVPR 2019).

Each teacher's softened distribution over its own classes is matched by the student's
distribution renormalised over those same classes, on every training image (a teacher's
view of an image outside its classes is still information about how its classes relate),
summed over teachers.
"""

from __future__ import annotations

import torch.nn.functional as F

from amalgam.distill.losses import partial_kd_loss, partial_teacher_weights
from amalgam.distill.methods.base import Capabilities, Method, register_method


@register_method
class PartialKD(Method):
    name = "partial-kd"
    capabilities = Capabilities(
        options_used=("temperature", "alpha", "confidence_weighting", "teacher_filter")
    )

    def loss_terms(self, student_logits, student_features, teacher, labels):
        o = self.options
        weights = partial_teacher_weights(teacher.logits, labels, self.roster, o.confidence_weighting,
                                          o.teacher_filter)
        return {
            "loss_ce": (1.0 - o.alpha) * F.cross_entropy(student_logits, labels),
            "loss_kd": o.alpha * partial_kd_loss(student_logits, teacher.logits, self.roster,
                                                 o.temperature, weights),
        }
