"""Losses between the student's and teachers' feature maps (FitNet hints, SimKD)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

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


@dataclass(frozen=True)
class HintTarget:
    """A teacher's feature map f, reduced to what the hint loss needs at the student's size.

    The hint resizes the student's guess r to the teacher's H x W, and that resize is linear:
    U r, with U = U_h (x) U_w (bilinear up, or average pooling down). So
        |U r - f|^2 = <r, A r B> - 2 <r, U^T f> + |f|^2,  A = U_h^T U_h, B = U_w^T U_w,
    and the loss, its gradient included, needs only `reduced` = U^T f (the student's h x w,
    64x fewer numbers than a 16x16 map under a 2x2 student) and `energy` = |f|^2 per image.
    Nothing of size H x W is built or back-propagated through: the hint costs what the
    student's own map costs, and the teacher cache stores these instead of whole maps.
    """

    reduced: torch.Tensor  # [B, C, h, w]: U^T f
    energy: torch.Tensor  # [B]: |f|^2 of each image's whole map
    teacher_size: tuple[int, int]  # f's H x W


def _axis_operator(student: tuple[int, int], teacher: tuple[int, int], axis: int) -> torch.Tensor:
    """`match_spatial`'s resize from the student's to the teacher's size along one axis, as a
    matrix [teacher, student], read off by resizing basis maps that are constant along the
    other axis (both resizes keep constants constant, so this is exact)."""
    n = student[axis]
    basis = torch.eye(n, dtype=torch.float64)
    if axis == 0:  # map j is 1 on row j
        maps = basis[:, None, :, None].expand(n, 1, n, student[1])
    else:  # map j is 1 on column j
        maps = basis[:, None, None, :].expand(n, 1, student[0], n)
    resized = match_spatial(maps, teacher)  # [n, 1, H, W]
    along = resized[:, 0, :, 0] if axis == 0 else resized[:, 0, 0, :]
    return along.T.contiguous()


@lru_cache(maxsize=64)
def hint_operators(student: tuple[int, int], teacher: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """(U_h [H, h], U_w [W, w], A = U_h^T U_h, B = U_w^T U_w), float64 on the CPU."""
    u_h, u_w = _axis_operator(student, teacher, 0), _axis_operator(student, teacher, 1)
    return u_h, u_w, u_h.T @ u_h, u_w.T @ u_w


def reduce_for_hint(teacher_map: torch.Tensor, student_size: tuple[int, int]) -> HintTarget:
    """f [B, C, H, W] as a HintTarget for a student map of `student_size` (float32 results)."""
    f = teacher_map.detach().float()
    teacher_size = (int(f.shape[-2]), int(f.shape[-1]))
    u_h, u_w, _, _ = hint_operators(tuple(student_size), teacher_size)
    reduced = u_h.T.to(f) @ (f @ u_w.to(f))  # [B, C, h, w]
    return HintTarget(reduced, f.pow(2).flatten(1).sum(1), teacher_size)


def _reduced_hint_error(guess: torch.Tensor, target: HintTarget) -> tuple[torch.Tensor, torch.Tensor]:
    """(|U r - f|^2 summed over the batch, the number of elements of f) from a HintTarget."""
    _, _, a, b = hint_operators((int(guess.shape[-2]), int(guess.shape[-1])), target.teacher_size)
    r = guess.float()
    fitted = (r * (a.to(r) @ r @ b.to(r))).sum()
    error = fitted - 2 * (r * target.reduced.to(r)).sum() + target.energy.sum()
    return error, guess.shape[0] * guess.shape[1] * target.teacher_size[0] * target.teacher_size[1]


def hint_loss(regressed: list[torch.Tensor],
              teacher_features: list[torch.Tensor | HintTarget]) -> torch.Tensor:
    """FitNet hints, normalised: Σ_k MSE(r_k resized to f_t_k, f_t_k) / mean(f_t_k²), r_k the
    student's map regressed onto teacher k's channels.

    Dividing by the teacher's mean square (a constant for the gradient) makes each term the
    fraction of the teacher's feature energy the student misses: 1 for a regressor that
    outputs zeros, whatever the teacher's activation scale. So one hint weight suits any
    teacher architecture, and teachers with large activations do not drown the others. The
    guess is resized to the teacher's map, so each teacher is matched at its own resolution.
    A target may be the whole map or its `HintTarget` (the same loss, computed at the
    student's size; equal within float32 rounding, tests/test_hint_reduction.py).
    """
    total = regressed[0].new_zeros(())
    for guess, target in zip(regressed, teacher_features, strict=True):
        if isinstance(target, HintTarget):
            error, count = _reduced_hint_error(guess, target)
            total = total + error / (target.energy.sum() / count).clamp_min(1e-12) / count
            continue
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
