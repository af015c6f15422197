"""`kd` and `partial-kd` together, so each can fix the errors the other makes.

The covering teachers' average puts zero mass on every class those teachers do not know,
which separates classes that no single teacher knows together but blurs the ones inside a
teacher's roster; partial-kd sharpens those inside a roster but, from teachers that never
saw the image's class, raises the most similar wrong class. One CE term, `kd`'s soft term
and partial-kd's term (`loss_partial`).
"""

from __future__ import annotations

from amalgam.distill.losses import (
    filtered_covering_targets,
    kd_loss,
    partial_kd_loss,
    partial_teacher_weights,
)
from amalgam.distill.methods.base import Method, register_method
from amalgam.distill.methods.partial_kd import PartialKD


@register_method
class UnionKD(Method):
    name = "union-kd"
    capabilities = PartialKD.capabilities  # kd's options are a subset of these

    def loss_terms(self, student_logits, student_features, teacher, labels):
        o = self.options
        targets = filtered_covering_targets(teacher.logits, labels, self.roster, o.temperature,
                                            o.teacher_filter)
        terms = kd_loss(student_logits, targets, labels, o.temperature, o.alpha)
        weights = partial_teacher_weights(teacher.logits, labels, self.roster, o.confidence_weighting,
                                          o.teacher_filter)
        terms["loss_partial"] = o.alpha * partial_kd_loss(student_logits, teacher.logits, self.roster,
                                                          o.temperature, weights)
        return terms
