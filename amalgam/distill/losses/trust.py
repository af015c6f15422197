"""How far to trust the teachers on each class: as far as they know more than the student.

A capable student can learn some classes from their labels better than its teachers know them
(a resnet18 trained on labels alone has beaten partial teachers combined); a small one rarely
does. A fixed KD weight pulls the first towards the teachers' mistakes and the second not hard
enough. Per class c, the teachers combined are right on a fraction t_c of the validation images
and the student (at its last validation) on s_c; the KD weight on the images labelled c is alpha
times `class_trust`: 1 while the teachers know the class at least as well as the student, falling
linearly to 0 once the student is `margin` ahead; the label's CE takes the rest.
"""

from __future__ import annotations

import torch

# How far ahead (a fraction of the class's validation images) the student must be before the
# teachers' weight on a class is gone: 0.1 = 10 points, about 3 images of a 30-image class.
TRUST_MARGIN = 0.1


def per_class_accuracy(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[C] fraction of each class's images predicted right; NaN for a class with no image."""
    right = torch.zeros(num_classes).index_add_(0, labels.cpu(), (predicted.cpu() == labels.cpu()).float())
    support = torch.bincount(labels.cpu(), minlength=num_classes).float()
    return torch.where(support > 0, right / support.clamp_min(1), torch.nan)


def class_trust(teachers: torch.Tensor, student: torch.Tensor, margin: float = TRUST_MARGIN) -> torch.Tensor:
    """[C] weights in [0, 1]: clamp(1 + (t_c - s_c) / margin, 0, 1); 1 where either is unknown."""
    trust = (1.0 + (teachers - student) / margin).clamp(0.0, 1.0)
    return torch.where(trust.isnan(), torch.ones_like(trust), trust)
