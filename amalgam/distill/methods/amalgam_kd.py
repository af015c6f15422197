"""Knowledge amalgamation without labels: KL to the teachers combined over the union.

The target is the "Unifying Heterogeneous Classifiers" combination of every teacher
(`uhc_union_probs`), softened at `--temperature`; there is no cross-entropy term, so the
loss reads no label and the method trains on unlabeled images and with `--labels none`.
`fitnet+amalgam-kd` adds FitNet's hints, which need no labels either.
"""

from __future__ import annotations

from amalgam.distill.losses import soft_cross_entropy, uhc_union_probs
from amalgam.distill.methods.base import Method, register_method
from amalgam.distill.methods.fitnet import FitNetHints
from amalgam.distill.methods.sum_of_terms import SumOfTerms


@register_method
class AmalgamKD(Method):
    name = "amalgam-kd"
    options_used = ("temperature",)
    needs_labels = False

    def targets(self, teacher_logits, temperature: float):
        """The distribution over the union the student is pulled to; label-free methods differ here."""
        return uhc_union_probs(teacher_logits, self.roster, temperature)

    def loss_terms(self, student_logits, student_features, teacher, labels):
        t = self.options.temperature
        return {"loss_kd": soft_cross_entropy(student_logits, self.targets(teacher.logits, t), t)}


register_method(SumOfTerms("fitnet+amalgam-kd", (AmalgamKD, FitNetHints)))
