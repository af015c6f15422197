"""Losses between the student's and teachers' feature maps (FitNet hints, SimKD)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def match_spatial(source: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pool a larger map down, or interpolate a smaller one up, to `size`."""
    if tuple(source.shape[-2:]) == tuple(size):
        return source
    if source.shape[-2] >= size[0] and source.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(source, size)
    return F.interpolate(source, size=size, mode="bilinear", align_corners=False)


def common_size(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int]:
    """SimKD's rule: compare at the smaller of the two spatial sizes."""
    return (min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1]))


def hint_loss(regressed: list[torch.Tensor], teacher_features: list[torch.Tensor]) -> torch.Tensor:
    """FitNet hints, normalised: Σ_k MSE(r_k resized to f_t_k, f_t_k) / mean(f_t_k²), r_k the
    student's map regressed onto teacher k's channels.

    Dividing by the teacher's mean square (a constant for the gradient) makes each term the
    fraction of the teacher's feature energy the student misses: 1 for a regressor that
    outputs zeros, whatever the teacher's activation scale. So one hint weight suits any
    teacher architecture, and teachers with large activations do not drown the others. The
    guess is resized to the teacher's map, so each teacher is matched at its own resolution.
    """
    total = regressed[0].new_zeros(())
    for guess, target in zip(regressed, teacher_features, strict=True):
        energy = target.detach().pow(2).mean().clamp_min(1e-12)
        total = total + F.mse_loss(match_spatial(guess, tuple(target.shape[-2:])), target) / energy
    return total


def simkd_loss(projected: list[torch.Tensor], teacher_features: list[torch.Tensor]) -> torch.Tensor:
    """SimKD: Σ_k MSE(p_k, f_t_k resized to p_k), p_k the student's map projected for teacher k
    at `common_size`.

    The teacher's map is brought to the projection's (smaller or equal) size, as SimKD does.
    """
    total = projected[0].new_zeros(())
    for guess, target in zip(projected, teacher_features, strict=True):
        total = total + F.mse_loss(guess, match_spatial(target, tuple(guess.shape[-2:])))
    return total
