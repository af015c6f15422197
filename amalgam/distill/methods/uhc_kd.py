"""Hinton KD towards the teachers combined over the union as "Unifying Heterogeneous
Classifiers" does (`uhc_union_probs`), with the student's own cross-entropy.

Unlike `kd`'s rule, the target does not depend on the label: every teacher speaks on every
image, and a class the covering teachers do not know still gets the mass the others give it
through the classes they share.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from amalgam.distill.losses import kd_loss, uhc_union_probs
from amalgam.distill.methods.base import Capabilities, Method, MethodOptions, register_method
from amalgam.distill.methods.class_trust import ClassTrust
from amalgam.tasks.spec import Roster


@register_method
class UnionClassifierKD(Method):
    name = "uhc-kd"
    capabilities = Capabilities(options_used=("temperature", "alpha", "teacher_trust"))

    fixed_targets = True  # the combination reads only the teachers' logits: cached teachers' is memoised

    def __init__(self, roster: Roster, options: MethodOptions):
        super().__init__(roster, options)
        # --teacher-trust per-class only, so a fixed-trust run's saved state has no such keys
        self.class_trust = ClassTrust(roster.coverage.shape[1]) if self.fits_validation else None

    @classmethod
    def capabilities_at(cls, options: MethodOptions) -> Capabilities:
        return replace(cls.capabilities, fits_validation=options.teacher_trust == "per-class")

    def teacher_targets(self, teacher_logits):
        return uhc_union_probs(teacher_logits, self.roster, self.options.temperature)

    def fit_to_validation(self, teacher_logits: torch.Tensor, labels: torch.Tensor) -> str | None:
        if self.class_trust is None:
            return None
        blocks = teacher_logits.split(self.target_block_rows(teacher_logits))
        predicted = torch.cat([self.teacher_targets(block).argmax(dim=1) for block in blocks])
        return self.class_trust.fit(predicted, labels)

    def observe_validation(self, per_class_accuracy: torch.Tensor) -> None:
        if self.class_trust is not None:
            self.class_trust.observe(per_class_accuracy)

    def image_weights(self, labels: torch.Tensor) -> torch.Tensor | None:
        """Each image's trust in the teachers (its label's class); None under a fixed trust."""
        return None if self.class_trust is None else self.class_trust.weights(labels)

    def loss_terms(self, student_logits, student_features, teacher, labels):
        o = self.options
        return kd_loss(student_logits, self.targets_for(teacher), labels, o.temperature, o.alpha,
                       self.image_weights(labels))
