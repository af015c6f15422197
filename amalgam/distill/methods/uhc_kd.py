"""Hinton KD towards the teachers combined over the union as "Unifying Heterogeneous
Classifiers" does (`uhc_union_probs`), with the student's own cross-entropy.

Unlike `kd`'s rule, the target does not depend on the label: every teacher speaks on every
image, and a class the covering teachers do not know still gets the mass the others give it
through the classes they share.
"""

from __future__ import annotations

from amalgam.distill.losses import kd_loss, uhc_union_probs
from amalgam.distill.methods.base import Capabilities, Method, register_method


@register_method
class UnionClassifierKD(Method):
    name = "uhc-kd"
    capabilities = Capabilities(options_used=("temperature", "alpha"))

    fixed_targets = True  # the combination reads only the teachers' logits: cached teachers' is memoised

    def teacher_targets(self, teacher_logits):
        return uhc_union_probs(teacher_logits, self.roster, self.options.temperature)

    def loss_terms(self, student_logits, student_features, teacher, labels):
        o = self.options
        return kd_loss(student_logits, self.targets_for(teacher), labels, o.temperature, o.alpha)
