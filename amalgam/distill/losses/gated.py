"""The teachers combined through the student's idea of whose classes an image belongs to.

Partial teachers are near-perfect among their own classes and confidently wrong on the others,
so what their combination lacks is which teacher an image belongs to, not how the classes inside
a teacher relate, and their own outputs say it poorly. A student trained on every image with the
teachers' combined targets may learn it better, so the target here asks the student: each
teacher k's distribution over its classes, p_k, is weighed by the mass g_k the student puts on
those classes, q(c) ∝ mean over the teachers k that know c of g_k · p_k(c).
"""

from __future__ import annotations

import torch

from amalgam.distill.losses.task_space import masked_local_softmax, place_in_task_space
from amalgam.tasks.spec import Roster


def teacher_gates(probs: torch.Tensor, roster: Roster) -> torch.Tensor:
    """[B, K] the mass a distribution over the task's classes ([B, C]) puts on each teacher's classes."""
    return probs @ roster.coverage.to(probs.device, probs.dtype).T


def gated_targets(local_logits: torch.Tensor, gates: torch.Tensor, roster: Roster,
                  temperature: float) -> torch.Tensor:
    """[B, C]: q(c) ∝ Σ_{k ∋ c} gates_k · p_k(c) / (number of teachers that know c), p_k teacher k's
    distribution over its own classes at `temperature`. A class no teacher knows gets 0."""
    placed = place_in_task_space(masked_local_softmax(local_logits.float(), roster, temperature), roster)
    coverage = roster.coverage.to(placed.device, placed.dtype)  # [K, C]
    summed = (gates.to(placed.dtype).unsqueeze(2) * placed).sum(dim=1)
    mixed = summed / coverage.sum(dim=0).clamp_min(1.0)
    return mixed / mixed.sum(dim=1, keepdim=True).clamp_min(torch.finfo(mixed.dtype).tiny)
