"""Knowledge amalgamation without labels: KL to the teachers combined over the union.

The target is the "Unifying Heterogeneous Classifiers" combination of every teacher
(`uhc_union_probs`), softened at `--temperature`; there is no cross-entropy term, so the
loss reads no label and the method trains on unlabeled images and with `--labels none`.
`fitnet+amalgam-kd` adds FitNet's hints, which need no labels either. With
`--class-prior uniform` the combination is first balanced over the training set
(losses/class_balance.py): one weight per class, fitted at start-up on the whole set.
"""

from __future__ import annotations

import torch

from amalgam.distill.losses import (
    apply_class_weights,
    balancing_log_weights,
    soft_cross_entropy,
    uhc_union_probs,
)
from amalgam.distill.methods.base import Method, register_method
from amalgam.distill.methods.fitnet import FitNetHints
from amalgam.distill.methods.sum_of_terms import SumOfTerms

# Fitting combines the whole training set in blocks of about this many Hessian entries: UHC's
# Newton steps hold a float64 [B, C, C] Hessian (2^25 entries = 256 MiB).
FIT_HESSIAN_ENTRIES = 2**25


@register_method
class AmalgamKD(Method):
    name = "amalgam-kd"
    options_used = ("temperature", "class_prior")
    needs_labels = False

    def __init__(self, roster, options):
        super().__init__(roster, options)
        self.class_log_weights: torch.Tensor | None = None  # set by fit_to_training_set

    def combined(self, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """The teachers' answers as one distribution over the union; label-free methods differ here."""
        return uhc_union_probs(teacher_logits, self.roster, temperature)

    @property
    def fits_training_set(self) -> bool:
        return self.options.class_prior == "uniform"

    def fit_to_training_set(self, teacher_logits: torch.Tensor) -> str | None:
        if not self.fits_training_set:
            return None
        block = max(1, FIT_HESSIAN_ENTRIES // self.roster.num_classes**2)
        probs = torch.cat([self.combined(part, 1.0) for part in teacher_logits.split(block)])
        self.class_log_weights = balancing_log_weights(probs)
        weights = self.class_log_weights.exp()
        return (f"class prior uniform: the teachers' combined answers on {len(probs)} training images "
                f"reweighed per class by {float(weights.min()):.3g} to {float(weights.max()):.3g}")

    def targets(self, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """The distribution over the union the student is pulled to."""
        probs = self.combined(teacher_logits, temperature)
        if not self.fits_training_set:
            return probs
        if self.class_log_weights is None:
            raise RuntimeError(f"{self.name}: --class-prior uniform is fitted at start-up, before training")
        return apply_class_weights(probs, self.class_log_weights, temperature)

    def loss_terms(self, student_logits, student_features, teacher, labels):
        t = self.options.temperature
        return {"loss_kd": soft_cross_entropy(student_logits, self.targets(teacher.logits, t), t)}


register_method(SumOfTerms("fitnet+amalgam-kd", (AmalgamKD, FitNetHints)))
