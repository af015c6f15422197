"""Teacher networks: a compact CNN family we can train on 2 CPU cores, or any timm model.

The CNN exposes timm's `forward_features` / `forward_head` split so feature-based methods
(FitNet, SimKD) treat our teachers and timm models alike.
"""

from __future__ import annotations

import timm
import torch
import torch.nn as nn

from amalgam.errors import UserError
from amalgam.models.registry import register_teacher, teacher_builder

CNN_WIDTHS = {"cnn-small": (32, 64, 128), "cnn-medium": (48, 96, 192), "cnn-large": (64, 128, 256)}
DEFAULT_TEACHER_ARCH = "cnn-small"


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class CompactCNN(nn.Module):
    """Three conv blocks, global pooling, dropout, linear head."""

    def __init__(self, num_classes: int, widths: tuple[int, ...], in_chans: int = 3):
        super().__init__()
        layers, c_in = [], in_chans
        for width in widths:
            layers.append(_block(c_in, width))
            c_in = width
        self.features = nn.Sequential(*layers)
        self.num_features = c_in
        self.head_drop = nn.Dropout(0.2)
        self.fc = nn.Linear(c_in, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(self.head_drop(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _compact_cnn(widths: tuple[int, ...]):
    def build(num_classes: int, in_chans: int = 3) -> CompactCNN:
        return CompactCNN(num_classes, widths, in_chans)

    return build


for _arch, _widths in CNN_WIDTHS.items():
    register_teacher(_arch)(_compact_cnn(_widths))


def create_teacher(arch: str, num_classes: int, in_chans: int = 3) -> nn.Module:
    """Any teacher by name: a registered architecture, else a timm model."""
    build = teacher_builder(arch)
    if build is not None:
        return build(num_classes, in_chans)
    if timm.is_model(arch):
        return timm.create_model(arch, pretrained=False, num_classes=num_classes)
    raise UserError(
        f"unknown teacher architecture {arch!r}; use one of {sorted(CNN_WIDTHS)} "
        "or any timm model name (`timm.list_models()`)"
    )
