"""A logit method with FitNet's hints added: `fitnet+kd`, `fitnet+partial-kd`, `fitnet+union-kd`.

Partial teachers' logits say nothing about pairs of classes no single teacher knows, while
a teacher's feature map still responds to images of classes it never saw; the idea was to
let hints carry that and the logit term what each teacher knows about its own classes.
The sum is the base method's terms plus `hint_weight` times FitNet's hint, with one 1x1
regressor per teacher as in `fitnet`. Measured on `fashion` (README, "Method comparison"),
`fitnet+union-kd` scored 2.3 points below `fitnet` alone; the composites stay so that
claim can be re-checked on other tasks.
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
