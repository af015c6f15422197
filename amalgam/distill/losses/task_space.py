"""Where partial teachers' outputs sit in the task's classes.

Teacher k outputs logits over its own classes, padded to a common width L ([B, K, L]); the
roster's index tensors scatter them into the task's global classes for a whole batch and
all teachers at once.
"""

from __future__ import annotations

import torch

from amalgam.tasks.spec import Roster


def masked_local_softmax(local_logits: torch.Tensor, roster: Roster, temperature: float = 1.0):
    """Softmax over each teacher's real classes; padded slots get probability 0. [B,K,L]."""
    mask = roster.local_mask.to(local_logits.device)
    scaled = (local_logits / temperature).masked_fill(~mask, float("-inf"))
    return torch.softmax(scaled, dim=-1)


def place_in_task_space(local_values: torch.Tensor, roster: Roster) -> torch.Tensor:
    """[B, K, L] per-teacher values → [B, K, C], zeros at classes a teacher does not know."""
    b, k, _ = local_values.shape
    index = roster.local_to_global.to(local_values.device).expand(b, k, -1)
    mask = roster.local_mask.to(local_values.device)
    placed = local_values.new_zeros(b, k, roster.num_classes)
    return placed.scatter_add(2, index, local_values * mask)


def covering_teachers(labels: torch.Tensor, roster: Roster) -> torch.Tensor:
    """[B, K] bool: teacher k's classes include sample b's label."""
    return roster.coverage.to(labels.device)[:, labels].T


def correct_teachers(local_logits: torch.Tensor, labels: torch.Tensor, roster: Roster) -> torch.Tensor:
    """[B, K] bool: the teacher knows the sample's class and ranks it first.

    A teacher that covers the label but gets the image wrong would teach its mistake; the
    `correct` teacher filter keeps only these.
    """
    masked = local_logits.masked_fill(~roster.local_mask.to(local_logits.device), float("-inf"))
    predicted = roster.local_to_global.to(local_logits.device).gather(
        1, masked.argmax(dim=2).T
    ).T  # [B, K] global index of each teacher's top class
    return covering_teachers(labels, roster) & (predicted == labels[:, None])
