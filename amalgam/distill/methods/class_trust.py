"""The state of `--teacher-trust per-class` (losses/trust.py): the teachers' per-class validation
accuracy, fitted at start-up, and the weight per class, following the student.

A module of its own, so a method holding it saves it with its state (a resumed run goes on with
the same weights) and a sum of terms adopts it as it adopts any part's helper; a run with a fixed
trust has none, so its saved state is what it always was.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from amalgam.distill.losses.trust import class_trust, per_class_accuracy


class ClassTrust(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.register_buffer("teachers_accuracy", torch.full((num_classes,), torch.nan))
        self.register_buffer("trust", torch.ones(num_classes))

    def fit(self, teachers_predicted: torch.Tensor, labels: torch.Tensor) -> str:
        """The teachers combined's per-class accuracy from their predictions on the validation
        images; returns the line for the log."""
        self.teachers_accuracy.copy_(per_class_accuracy(teachers_predicted, labels, len(self.trust)))
        # NaN (a class with no validation image) shows as "-"
        shown = ", ".join("-" if a != a else f"{a:.0%}" for a in self.teachers_accuracy.tolist())
        return f"--teacher-trust per-class: teachers combined, validation accuracy per class {shown}"

    def observe(self, student_accuracy: torch.Tensor) -> None:
        self.trust.copy_(class_trust(self.teachers_accuracy.cpu(), student_accuracy.cpu()))

    def weights(self, labels: torch.Tensor) -> torch.Tensor:
        """Each image's weight: its label's class's trust."""
        return self.trust[labels]
