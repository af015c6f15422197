"""`kd` and `partial-kd` together: each fixes the errors the other makes.

Measured on `fashion` (README, "Method comparison"): the seed rule's target puts zero mass
on every class the covering teachers do not know, which cuts errors between classes that no
single teacher knows together (T-shirt vs Shirt) but blurs the ones inside a teacher's
roster; partial-kd sharpens those inside a roster but, from teachers that never saw the
image's class, raises the most similar wrong class. Summing both terms keeps each one's gain.
"""

from __future__ import annotations

from amalgam.distill.losses import kd_loss
from amalgam.distill.methods.kd import filtered_seed_targets
from amalgam.distill.methods.partial_kd import PartialKD, partial_kd_loss


class UnionKD(PartialKD):
    name = "union-kd"  # reads the same options as partial-kd

    def loss_terms(self, student_logits, student_features, teacher, labels):
        o = self.options
        targets = filtered_seed_targets(teacher.logits, labels, self.roster, o)
        terms = kd_loss(student_logits, targets, labels, o.temperature, o.alpha)
        weights = self.teacher_weights(teacher.logits, labels)
        terms["loss_partial"] = o.alpha * partial_kd_loss(student_logits, teacher.logits, self.roster,
                                                          o.temperature, weights)
        return terms
