"""Losses between the student's logits and teachers' targets (KD, partial KD, DKD)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from amalgam.distill.losses.task_space import masked_local_softmax
from amalgam.tasks.spec import Roster

PADDING_LOGIT = -1e4  # finite, so padded slots give 0·finite rather than 0·inf = nan
EPS = 1e-8


def soft_cross_entropy(student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float):
    """KL(target || softmax(z_s / T)) averaged over the batch, times T².

    The T² (Hinton et al., 2015) keeps the soft term's gradients the same size whatever T is.
    """
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    kl = F.kl_div(log_q, target_probs, reduction="batchmean")
    return kl * temperature**2


def kd_loss(
    student_logits: torch.Tensor,
    target_probs: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
    weights: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Hinton KD: (1-a)·CE(z_s, y) + a·T²·KL(p_t || softmax(z_s/T)), as named terms.

    `weights` [B] in [0, 1] (per-class trust, losses/trust.py) scale a per image: image i's
    terms are (1 - a·w_i)·CE_i and a·w_i·T²·KL_i, averaged over the batch.
    """
    if weights is None:
        return {
            "loss_ce": (1.0 - alpha) * F.cross_entropy(student_logits, labels),
            "loss_kd": alpha * soft_cross_entropy(student_logits, target_probs, temperature),
        }
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    kl = F.kl_div(log_q, target_probs, reduction="none").sum(dim=1)  # [B]: soft_cross_entropy's, per image
    weighted = alpha * weights
    return {
        "loss_ce": ((1.0 - weighted) * F.cross_entropy(student_logits, labels, reduction="none")).mean(),
        "loss_kd": (weighted * kl).mean() * temperature**2,
    }


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
    """T² · mean over the batch of Σ_k w_bk · KL(p_k || q_k restricted to teacher k's classes).

    A partial teacher says only how its own classes relate, so the student is compared with
    it on those classes alone (Vongkulbhisal et al., CVPR 2019), on every image.
    """
    log_q = student_in_teacher_spaces(student_logits, roster, temperature)
    p = masked_local_softmax(teacher_logits, roster, temperature)
    kl = (torch.xlogy(p, p) - p * log_q).sum(dim=2)  # [B, K]
    if weights is not None:
        kl = kl * weights
    return kl.sum(dim=1).mean() * temperature**2


def dkd_loss(
    student_logits: torch.Tensor, target_probs: torch.Tensor, labels: torch.Tensor, temperature: float,
    alpha: float, beta: float,
) -> dict[str, torch.Tensor]:
    """Decoupled KD (Zhao et al., CVPR 2022): TCKD on (p_target, 1 - p_target) and NCKD over
    the non-target classes, both times T², plus plain CE.

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
