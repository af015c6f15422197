"""Decoupled KD (Zhao et al., CVPR 2022) on the teachers' combined target.

The target is the seed rule's distribution over the task (covering teachers averaged), so
DKD's target-class and non-target-class parts are defined for partial teachers too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from amalgam.distill.methods.base import Method
from amalgam.distill.methods.kd import filtered_seed_targets

EPS = 1e-8


def dkd_loss(
    student_logits: torch.Tensor, target_probs: torch.Tensor, labels: torch.Tensor, temperature: float,
    alpha: float, beta: float,
) -> dict[str, torch.Tensor]:
    """TCKD on (p_target, 1 - p_target) and NCKD over the non-target classes, both times T².

    Samples whose target row is all zero (no teacher left after filtering) are left out.
    """
    gt = F.one_hot(labels, student_logits.shape[1]).bool()
    valid = (target_probs.sum(dim=1) > 0).float()
    n_valid = valid.sum().clamp_min(1.0)
    p_s = F.softmax(student_logits / temperature, dim=1)
    s_gt = (p_s * gt).sum(dim=1).clamp(EPS, 1 - EPS)
    t_gt = (target_probs * gt).sum(dim=1).clamp(EPS, 1 - EPS)
    tckd = t_gt * (t_gt.log() - s_gt.log()) + (1 - t_gt) * ((1 - t_gt).log() - (1 - s_gt).log())
    log_s_rest = F.log_softmax(student_logits / temperature - 1000.0 * gt, dim=1)
    t_rest = target_probs.masked_fill(gt, 0.0)
    t_rest = t_rest / t_rest.sum(dim=1, keepdim=True).clamp_min(EPS)
    nckd = (torch.xlogy(t_rest, t_rest) - t_rest * log_s_rest).sum(dim=1)
    scale = temperature**2
    return {
        "loss_ce": F.cross_entropy(student_logits, labels),
        "loss_tckd": alpha * scale * (tckd * valid).sum() / n_valid,
        "loss_nckd": beta * scale * (nckd * valid).sum() / n_valid,
    }


class DecoupledKD(Method):
    name = "dkd"
    options_used = ("temperature", "dkd_alpha", "dkd_beta", "teacher_filter")

    def loss_terms(self, student_logits, student_features, teacher, labels):
        o = self.options
        targets = filtered_seed_targets(teacher.logits, labels, self.roster, o)
        return dkd_loss(student_logits, targets, labels, o.temperature, o.dkd_alpha, o.dkd_beta)
