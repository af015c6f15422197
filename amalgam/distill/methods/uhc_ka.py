"""`uhc-ka`: `uhc-kd` whose target is corrected by the label where the teachers combined are
wrong (knowledge adjustment, amalgam/distill/losses/adjusted.py); `fitnet+uhc-ka` adds FitNet's
hints as `fitnet+uhc-kd` does.

With strong teachers the combined target carries more than the labels; with a capable student
the teachers' mistakes cost more than their soft classes give (a resnet18 student's CE alone has
beaten the teachers combined). The adjusted target keeps the first and drops the second, per image.
"""

from __future__ import annotations

from amalgam.distill.losses import kd_loss
from amalgam.distill.losses.adjusted import knowledge_adjusted
from amalgam.distill.methods.base import register_method
from amalgam.distill.methods.fitnet import FitNetHints
from amalgam.distill.methods.sum_of_terms import SumOfTerms
from amalgam.distill.methods.uhc_kd import UnionClassifierKD


@register_method
class AdjustedUnionClassifierKD(UnionClassifierKD):
    name = "uhc-ka"

    def loss_terms(self, student_logits, student_features, teacher, labels):
        o = self.options
        adjusted = knowledge_adjusted(self.targets_for(teacher), labels)
        return kd_loss(student_logits, adjusted, labels, o.temperature, o.alpha, self.image_weights(labels))


register_method(SumOfTerms("fitnet+uhc-ka", (AdjustedUnionClassifierKD, FitNetHints)))
