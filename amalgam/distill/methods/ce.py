"""Plain cross-entropy: the baseline every comparison must include."""

from __future__ import annotations

import torch.nn.functional as F

from amalgam.distill.methods.base import Capabilities, Method, register_method


@register_method
class CrossEntropy(Method):
    name = "ce"
    capabilities = Capabilities(uses_teachers=False)

    def loss_terms(self, student_logits, student_features, teacher, labels):
        return {"loss_ce": F.cross_entropy(student_logits, labels)}
