"""Tiny students, rosters and teacher logits for the loss and method tests."""

from __future__ import annotations

import torch

from amalgam.tasks.spec import DataSpec, TaskSpec, TeacherSpec


def roster3():
    """Classes a..e; t1 = (a, b), t2 = (b, c, d) overlapping on b, t3 = (e, a)."""
    spec = TaskSpec(
        "r",
        tuple("abcde"),
        (TeacherSpec("t1", ("a", "b")), TeacherSpec("t2", ("b", "c", "d")), TeacherSpec("t3", ("e", "a"))),
        DataSpec("none"),
    )
    return spec, spec.roster()


class TinyStudent(torch.nn.Module):
    """Enough of timm's interface (forward_features / forward_head) for feature methods."""

    def __init__(self, classes: int):
        super().__init__()
        self.body = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.fc = torch.nn.Linear(6, classes)

    def forward_features(self, x):
        return torch.relu(self.body(x))

    def forward_head(self, f):
        return self.fc(f.mean(dim=(2, 3)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def roster_of(*teachers: tuple[str, ...], classes: str = "abcde"):
    spec = TaskSpec("r", tuple(classes), tuple(TeacherSpec(f"t{k}", t) for k, t in enumerate(teachers)),
                    DataSpec("none"))
    return spec.roster()


def padded(*rows: list[float], width: int) -> torch.Tensor:
    return torch.tensor([row + [0.0] * (width - len(row)) for row in rows])


def teacher_logits(n: int = 60) -> torch.Tensor:
    """Two overlapping teachers on classes abc / bcd that favour b and c: an unbalanced union."""
    torch.manual_seed(1)
    first = torch.randn(n, 3) + torch.tensor([0.0, 2.0, 1.0])
    second = torch.randn(n, 3) + torch.tensor([1.5, 1.0, 0.0])
    return torch.stack([first, second], dim=1)  # [n, 2, 3]
