"""Hinton KD towards the teachers combined over the union as "Unifying Heterogeneous
Classifiers" does (`uhc_union_probs`), with the student's own cross-entropy.

Unlike `kd`'s rule, the target does not depend on the label: every teacher speaks on every
image, and a class the covering teachers do not know still gets the mass the others give it
through the classes they share. With `--class-prior uniform` the combination is balanced over
the training set first (with `labels`, spread as the training labels are), as `amalgam-kd`
balances it (losses/class_balance.py): partial teachers pile mass on some classes of images
they never saw, and the balanced combination is the better classifier on every roster measured
(docs/benchmarks/quality.md).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from amalgam.distill.losses import kd_loss, uhc_union_probs
from amalgam.distill.losses.class_balance import fit_class_prior, with_fitted_prior
from amalgam.distill.methods.base import Capabilities, Method, MethodOptions, register_method
from amalgam.distill.methods.class_trust import ClassTrust
from amalgam.tasks.spec import Roster


@register_method
class UnionClassifierKD(Method):
    name = "uhc-kd"
    capabilities = Capabilities(options_used=("temperature", "alpha", "teacher_trust", "class_prior"))

    fixed_targets = True  # the combination reads only the teachers' logits: cached teachers' is memoised

    def __init__(self, roster: Roster, options: MethodOptions):
        super().__init__(roster, options)
        # --teacher-trust per-class only, so a fixed-trust run's saved state has no such keys
        self.class_trust = ClassTrust(roster.coverage.shape[1]) if self.fits_validation else None
        self.class_log_weights: torch.Tensor | None = None  # --class-prior, set by fit_to_training_set

    @classmethod
    def capabilities_at(cls, options: MethodOptions) -> Capabilities:
        return replace(cls.capabilities, fits_validation=options.teacher_trust == "per-class",
                       fits_training_set=options.class_prior != "none")

    def teacher_targets(self, teacher_logits):
        """The combination at the run's temperature, before the class prior (what the teachers'
        cache memoises: the prior is fitted after the cache is built, and cheap per batch)."""
        return uhc_union_probs(teacher_logits, self.roster, self.options.temperature)

    def targets_for(self, teacher) -> torch.Tensor:
        return self.with_class_prior(super().targets_for(teacher))

    def with_class_prior(self, targets: torch.Tensor) -> torch.Tensor:
        if self.options.class_prior == "none":
            return targets
        return with_fitted_prior(targets, self.class_log_weights, self.options.temperature, self.name)

    def fit_to_training_set(self, teacher_logits: torch.Tensor, teacher_features: torch.Tensor | None = None,
                            labels: torch.Tensor | None = None) -> str | None:
        if not self.fits_training_set:
            return None
        probs = self.over_blocks(lambda block: uhc_union_probs(block, self.roster, 1.0), teacher_logits)
        self.class_log_weights, _, line = fit_class_prior(probs, self.options.class_prior, labels)
        return line

    def fit_to_validation(self, teacher_logits: torch.Tensor, labels: torch.Tensor) -> str | None:
        if self.class_trust is None:
            return None
        # the trust compares the student with the target it is pulled to: the prior's, if any
        def predicted_classes(block: torch.Tensor) -> torch.Tensor:
            return self.with_class_prior(self.teacher_targets(block)).argmax(dim=1)

        return self.class_trust.fit(self.over_blocks(predicted_classes, teacher_logits), labels)

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
