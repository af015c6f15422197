"""Partial-teacher KD (Unifying Heterogeneous Classifiers, Vongkulbhisal et al., CVPR 2019).

Each teacher's softened distribution over its own classes is matched by the student's
distribution renormalised over those same classes, on every training image (a teacher's
view of an image outside its classes is still information about how its classes relate),
summed over teachers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from amalgam.distill.ensemble import correct_teachers, covering_teachers, masked_local_softmax
from amalgam.distill.methods.base import Method
from amalgam.tasks.spec import Roster

PADDING_LOGIT = -1e4  # finite, so padded slots give 0·finite rather than 0·inf = nan


def student_in_teacher_spaces(student_logits: torch.Tensor, roster: Roster, temperature: float):
    """Student log-probabilities renormalised over each teacher's classes: [B, K, L]."""
    index = roster.local_to_global.to(student_logits.device)
    mask = roster.local_mask.to(student_logits.device)
    local = student_logits[:, index] / temperature  # [B, K, L]
    return F.log_softmax(local.masked_fill(~mask, PADDING_LOGIT), dim=2)


def partial_kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, roster: Roster, temperature: float,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """T² · mean over the batch of Σ_k w_bk · KL(p_k || q_k restricted to teacher k's classes)."""
    log_q = student_in_teacher_spaces(student_logits, roster, temperature)
    p = masked_local_softmax(teacher_logits, roster, temperature)
    kl = (torch.xlogy(p, p) - p * log_q).sum(dim=2)  # [B, K]
    if weights is not None:
        kl = kl * weights
    return kl.sum(dim=1).mean() * temperature**2


def confidence_weights(teacher_logits: torch.Tensor, roster: Roster) -> torch.Tensor:
    """Each teacher's top probability (T=1), scaled so a sample's weights average to 1."""
    confidence = masked_local_softmax(teacher_logits, roster).amax(dim=2)  # [B, K]
    return confidence * confidence.shape[1] / confidence.sum(dim=1, keepdim=True)


class PartialKD(Method):
    name = "partial-kd"
    options_used = ("temperature", "alpha", "confidence_weighting", "teacher_filter")

    def teacher_weights(self, teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        weights = None
        if self.options.confidence_weighting:
            weights = confidence_weights(teacher_logits, self.roster)
        chosen = None
        if self.options.teacher_filter == "covering":  # teachers that know the sample's class
            chosen = covering_teachers(labels, self.roster).float()
        elif self.options.teacher_filter == "correct":
            chosen = correct_teachers(teacher_logits, labels, self.roster).float()
        if chosen is not None:
            weights = chosen if weights is None else weights * chosen
        return weights

    def loss_terms(self, student_logits, student_features, teacher, labels):
        o = self.options
        weights = self.teacher_weights(teacher.logits, labels)
        return {
            "loss_ce": (1.0 - o.alpha) * F.cross_entropy(student_logits, labels),
            "loss_kd": o.alpha * partial_kd_loss(student_logits, teacher.logits, self.roster,
                                                 o.temperature, weights),
        }
