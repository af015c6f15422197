"""Adaptive knowledge amalgamation (after Shen et al., ICCV 2019): per image, learn from the
teacher whose answer is least ambiguous, plus FitNet's feature hints. No labels anywhere.

Ambiguity is a teacher's entropy over its own classes divided by log(its class count), so
teachers of different sizes compare fairly (`least_ambiguous_teacher`). The chosen teacher's
softened distribution is placed at its own classes' global indices, zero elsewhere
(`least_ambiguous_targets`): a confident teacher most likely knows the image's class, so it
claims the image, and the student learns both which teacher's classes the image belongs to
and how those classes relate. With overlapping rosters a shared class simply belongs to
whichever of its teachers is surer on that image. Loss: T²·KL(target || student at T), plus
`--hint-weight` × FitNet's hints from every teacher (a feature map responds to images of
classes its teacher never saw, so every teacher hints on every image).
"""

from __future__ import annotations

from amalgam.distill.losses import least_ambiguous_targets
from amalgam.distill.methods.amalgam_kd import AmalgamKD
from amalgam.distill.methods.base import register_method
from amalgam.distill.methods.fitnet import FitNetHints
from amalgam.distill.methods.sum_of_terms import SumOfTerms


class LeastAmbiguousTeacherKD(AmalgamKD):
    """KL to the least ambiguous teacher's answer; the logit part of `adaptive`."""

    name = "least-ambiguous-kd"

    def combined(self, teacher_logits, temperature: float):
        return least_ambiguous_targets(teacher_logits, self.roster, temperature)


register_method(SumOfTerms("adaptive", (LeastAmbiguousTeacherKD, FitNetHints)))
