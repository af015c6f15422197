"""Losses of the label-free amalgamation methods: CFL's multi-kernel MMD and Adaptive KA's
choice of the least ambiguous teacher.

Neither reads a label: they compare the student with the teachers on the image alone, so
they work on unlabeled images and with `--labels none`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from amalgam.distill.losses.task_space import masked_local_softmax, place_in_task_space
from amalgam.tasks.spec import Roster

# Common Feature Learning's kernel widths (Luo et al., IJCAI 2019; its public code)
CFL_SIGMAS = (0.001, 0.01, 0.05, 0.1, 0.2, 1.0, 2.0)


def mmd_multi_kernel(x: torch.Tensor, y: torch.Tensor, sigmas: tuple[float, ...] = CFL_SIGMAS,
                     normalise: bool = True) -> torch.Tensor:
    """Biased estimate of MMD² between the samples x [N, ...] and y [M, ...], clamped at 0.

    The kernel is a sum of Gaussians, k(a, b) = Σ_σ exp(−‖a − b‖² / (2σ²)), so no single width
    has to fit the distances. Each sample is flattened and, by default, L2-normalised first, as
    CFL does: the widths then mean the same whatever the features' scale. The biased estimate
    mean k(x, x') + mean k(y, y') − 2·mean k(x, y) can dip below 0 only by rounding; the clamp
    keeps the loss a distance.
    """
    x, y = x.flatten(1).float(), y.flatten(1).float()
    if normalise:
        x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
    z = torch.cat([x, y])
    squared = torch.cdist(z, z).pow(2)
    kernel = sum(torch.exp(-squared / (2.0 * sigma**2)) for sigma in sigmas)
    n = x.shape[0]
    k_xx, k_yy, k_xy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    return (k_xx.mean() + k_yy.mean() - 2.0 * k_xy.mean()).clamp_min(0.0)


def teacher_ambiguity(local_logits: torch.Tensor, roster: Roster) -> torch.Tensor:
    """[B, K] each teacher's entropy (T = 1) over its own classes, divided by log(its class count).

    Dividing by the largest possible entropy puts teachers of different sizes on one scale
    (0: certain, 1: uniform), so a 2-class teacher is not preferred just for having fewer classes.
    """
    probs = masked_local_softmax(local_logits.float(), roster)
    entropy = -torch.xlogy(probs, probs).sum(dim=2)
    sizes = roster.local_mask.to(local_logits.device).sum(dim=1).float()
    return entropy / sizes.clamp_min(2.0).log()


def least_ambiguous_teacher(local_logits: torch.Tensor, roster: Roster) -> torch.Tensor:
    """[B] the index of the teacher whose answer is least ambiguous (lowest `teacher_ambiguity`);
    ties go to the teacher listed first."""
    return teacher_ambiguity(local_logits, roster).argmin(dim=1)


def least_ambiguous_targets(local_logits: torch.Tensor, roster: Roster, temperature: float) -> torch.Tensor:
    """[B, C] per image, the least ambiguous teacher's softened distribution placed at its own
    classes' global indices, zero elsewhere (Adaptive KA's choice; the reference app's rule
    with that one teacher).

    The chosen teacher claims the image: a confident teacher is most likely one that knows
    its class, so the rest of the union gets no mass; every other teacher is ignored here.
    """
    chosen = least_ambiguous_teacher(local_logits, roster)  # [B]
    placed = place_in_task_space(masked_local_softmax(local_logits, roster, temperature), roster)
    return placed[torch.arange(len(chosen), device=placed.device), chosen]
