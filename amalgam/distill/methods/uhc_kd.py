"""Hinton KD towards the teachers combined over the union as "Unifying Heterogeneous
Classifiers" does (`uhc_union_probs`), with the student's own cross-entropy.

Unlike `kd`'s rule, the target does not depend on the label: every teacher speaks on every
image, and a class the covering teachers do not know still gets the mass the others give it
through the classes they share.
"""

from __future__ import annotations

from amalgam.distill.losses import kd_loss, uhc_union_probs
from amalgam.distill.methods.base import Method, register_method


@register_method
class UnionClassifierKD(Method):
    name = "uhc-kd"
    options_used = ("temperature", "alpha")

    def loss_terms(self, student_logits, student_features, teacher, labels):
        o = self.options
        targets = uhc_union_probs(teacher.logits, self.roster, o.temperature)
        return kd_loss(student_logits, targets, labels, o.temperature, o.alpha)
