"""Targets and per-teacher weights built from partial teachers' logits."""

from __future__ import annotations

import torch

from amalgam.distill.losses.task_space import (
    correct_teachers,
    covering_teachers,
    masked_local_softmax,
    place_in_task_space,
)
from amalgam.tasks.spec import Roster


def combined_teacher_probs(local_logits: torch.Tensor, roster: Roster) -> torch.Tensor:
    """The teachers as one classifier over the union: per class, the mean of its teachers'
    probabilities. The 'teachers combined' reference line in reports, and SimKD's prediction."""
    probs = place_in_task_space(masked_local_softmax(local_logits, roster), roster).sum(dim=1)
    counts = roster.coverage.to(local_logits.device).float().sum(dim=0)
    return probs / counts


def covering_average_targets(
    local_logits: torch.Tensor, labels: torch.Tensor, roster: Roster, temperature: float,
    allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft labels over the task from the teachers that cover the true class (the reference
    app's rule, vectorised).

    Only a teacher that knows the image's class has seen images like it, so only covering
    teachers are asked. Each one's softened probabilities go to their global indices; a
    class known to several covering teachers gets their mean. The result is renormalised to
    sum to 1 so it is a distribution for the KL term (it already is when one teacher covers
    the label). `allowed` [B, K] narrows the covering teachers further (e.g. to those that
    are correct); a sample left with none gets an all-zero row, which its caller must mask out.
    """
    coverage = roster.coverage.to(local_logits.device)  # [K, C]
    covering = covering_teachers(labels, roster).float()  # [B, K]
    if allowed is not None:
        covering = covering * allowed.float()
    probs = place_in_task_space(masked_local_softmax(local_logits, roster, temperature), roster)
    summed = (probs * covering[:, :, None]).sum(dim=1)  # [B, C]
    counts = covering @ coverage.float()  # [B, C]: covering teachers that know class c
    averaged = summed / counts.clamp_min(1.0)
    return averaged / averaged.sum(dim=1, keepdim=True).clamp_min(1e-12)


def filtered_covering_targets(
    local_logits: torch.Tensor, labels: torch.Tensor, roster: Roster, temperature: float, teacher_filter: str,
) -> torch.Tensor:
    """`covering_average_targets` from the teachers `teacher_filter` keeps.

    The rule itself already keeps only covering teachers, so `none` and `covering` agree;
    `correct` also drops those that rank another class first.
    """
    allowed = None
    if teacher_filter == "correct":
        allowed = correct_teachers(local_logits, labels, roster)
    return covering_average_targets(local_logits, labels, roster, temperature, allowed)


def confidence_weights(local_logits: torch.Tensor, roster: Roster) -> torch.Tensor:
    """Each teacher's top probability (T=1), scaled so a sample's weights average to 1.

    A teacher unsure about an image says less about it; the scaling keeps the loss's size.
    """
    confidence = masked_local_softmax(local_logits, roster).amax(dim=2)  # [B, K]
    return confidence * confidence.shape[1] / confidence.sum(dim=1, keepdim=True)


def partial_teacher_weights(
    local_logits: torch.Tensor, labels: torch.Tensor, roster: Roster, confidence_weighting: bool,
    teacher_filter: str,
) -> torch.Tensor | None:
    """[B, K] weight of each teacher's term in the partial-KD loss; None means all equal to 1.

    Confidence weighting scales each teacher by its confidence; a filter zeroes the teachers
    it drops (`covering`: those that do not know the label; `correct`: also those that are wrong).
    """
    weights = None
    if confidence_weighting:
        weights = confidence_weights(local_logits, roster)
    chosen = None
    if teacher_filter == "covering":
        chosen = covering_teachers(labels, roster).float()
    elif teacher_filter == "correct":
        chosen = correct_teachers(local_logits, labels, roster).float()
    if chosen is not None:
        weights = chosen if weights is None else weights * chosen
    return weights



UHC_MAX_STEPS = 30  # Newton steps; it stops earlier, once the gradient is below UHC_TOLERANCE
UHC_TOLERANCE = 1e-9


def uhc_union_probs(local_logits: torch.Tensor, roster: Roster, temperature: float = 1.0) -> torch.Tensor:
    """The teachers combined into one distribution q over the union, as "Unifying
    Heterogeneous Classifiers" (Vongkulbhisal et al., CVPR 2019) does: [B, C].

    q minimises Σ_k KL(p_k || q restricted to teacher k's classes and renormalised), so where
    teachers overlap they are made to agree, and the mass between two teachers' classes is
    set through the classes they share, never by averaging with a zero from a teacher that
    does not know the class. Uses every teacher and no label: a label-free target.

    In u = log q the objective is convex, Σ_k [logsumexp_{C_k}(u) − Σ_{c∈C_k} p_k(c)·u_c],
    so each sample is solved by damped Newton steps in float64 (the simple fixed point
    q(c) ∝ Σ_{k∋c} p_k(c) / Σ_{k∋c} 1/q(C_k) also descends, but needs thousands of steps
    when teachers disagree). Teachers that share no class with the others leave the split of
    mass between the groups open; the ridge keeps it where the start (uniform) put it.
    """
    coverage = roster.coverage.to(local_logits.device)  # [K, C]
    probs = place_in_task_space(masked_local_softmax(local_logits.double(), roster, temperature), roster)
    b, c = probs.shape[0], roster.num_classes
    u = probs.new_zeros(b, c)
    # H is singular along the all-ones direction (q is scale-free); 1·1ᵀ/C fills that in.
    ridge = 1e-6 * torch.eye(c, dtype=u.dtype, device=u.device) + 1.0 / c
    value = _uhc_objective(u, probs, coverage)
    for _ in range(UHC_MAX_STEPS):
        restricted = torch.softmax(u[:, None, :].masked_fill(~coverage, float("-inf")), dim=2)  # [B, K, C]
        gradient = (restricted - probs).sum(dim=1)
        if gradient.abs().max() < UHC_TOLERANCE:
            break
        outer = torch.einsum("bkc,bkd->bcd", restricted, restricted)
        hessian = torch.diag_embed(restricted.sum(dim=1)) - outer
        step = torch.linalg.solve(hessian + ridge, gradient)
        u, value = _halve_until_lower(u, step, value, probs, coverage)
    return torch.softmax(u, dim=1).to(local_logits.dtype)


def _uhc_objective(u: torch.Tensor, probs: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
    restricted = u[:, None, :].masked_fill(~coverage, float("-inf"))
    return torch.logsumexp(restricted, dim=2).sum(dim=1) - (probs * u[:, None, :]).sum(dim=(1, 2))


def _halve_until_lower(u, step, value, probs, coverage, halvings: int = 12):
    """Per sample, the largest of 1, 1/2, 1/4, ... times the Newton step that does not raise
    the objective (Newton alone can overshoot on very confident teachers); else no move."""
    scale = u.new_ones(u.shape[0], 1)
    for _ in range(halvings):
        candidate = u - scale * step
        candidate_value = _uhc_objective(candidate, probs, coverage)
        worse = ~(candidate_value <= value + UHC_TOLERANCE)
        if not worse.any():
            break
        scale = torch.where(worse[:, None], scale / 2, scale)
    keep = candidate_value <= value + UHC_TOLERANCE
    u = torch.where(keep[:, None], candidate, u)
    return u - u.mean(dim=1, keepdim=True), torch.where(keep, candidate_value, value)
