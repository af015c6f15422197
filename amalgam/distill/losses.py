"""Pure loss functions over tensors: no modules, no state, easy to check by hand."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_cross_entropy(student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float):
    """KL(target || softmax(z_s / T)) averaged over the batch, times T² (Hinton's scaling)."""
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    kl = F.kl_div(log_q, target_probs, reduction="batchmean")
    return kl * temperature**2


def kd_loss(
    student_logits: torch.Tensor,
    target_probs: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> dict[str, torch.Tensor]:
    """SPEC §4: (1-a)·CE(z_s, y) + a·T²·KL(p_t || softmax(z_s/T)), as named terms."""
    return {
        "loss_ce": (1.0 - alpha) * F.cross_entropy(student_logits, labels),
        "loss_kd": alpha * soft_cross_entropy(student_logits, target_probs, temperature),
    }
