"""A logit method with FitNet's hints added: `fitnet+kd`, `fitnet+partial-kd`, `fitnet+union-kd`.

Partial teachers' logits say nothing about pairs of classes no single teacher knows, but
their feature maps were shaped by every image they saw; hints carry that, the logit term
carries what the teachers know about their own classes. The sum is the base method's terms
plus `hint_weight` times FitNet's hint, with one 1x1 regressor per teacher as in `fitnet`.
"""

from __future__ import annotations

from amalgam.distill.methods.base import Method
from amalgam.distill.methods.fitnet import FitNet, hint_loss


def with_hints(base: type[Method]) -> type[Method]:
    """A subclass of the logit method `base` that also regresses onto the teachers' features."""

    class Hinted(base):
        name = f"fitnet+{base.name}"
        options_used = (*base.options_used, "hint_weight")
        needs_features = True
        setup = FitNet.setup

        def loss_terms(self, student_logits, student_features, teacher, labels):
            terms = super().loss_terms(student_logits, student_features, teacher, labels)
            terms["loss_hint"] = self.options.hint_weight * hint_loss(
                student_features, teacher.features, self.regressors
            )
            return terms

    Hinted.__name__ = Hinted.__qualname__ = f"Hinted{base.__name__}"
    Hinted.__doc__ = f"`{base.name}` plus FitNet hints from every teacher."
    return Hinted
