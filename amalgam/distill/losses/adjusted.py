"""Teachers' targets corrected by the label where the teachers are wrong, so a capable student
is never pulled away from a label it could learn by itself.

Knowledge adjustment (Wen et al., "Preparing Lessons: Improve Knowledge Distillation with
Better Supervision", Neurocomputing 2021): where the target's most probable class is not the
label, the two probabilities swap places. The label becomes the target's top class, and the
rest of the distribution (what the teachers know beyond the label: which wrong classes look
alike) is kept as it is; where the teachers are right nothing changes.
"""

from __future__ import annotations

import torch


def knowledge_adjusted(target_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B, C] targets with, per row, the top class's probability and the label's swapped."""
    top = target_probs.argmax(dim=1, keepdim=True)
    label = labels.view(-1, 1)
    p_top = target_probs.gather(1, top)
    p_label = target_probs.gather(1, label)
    return target_probs.scatter(1, top, p_label).scatter(1, label, p_top)

