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
