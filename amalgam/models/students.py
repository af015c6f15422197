"""The one front door to a student network: a name, a class count, optional ImageNet weights."""

from __future__ import annotations

import timm
import torch.nn as nn

from amalgam.errors import UserError

STUDENTS = {
    "mobilenetv3": "mobilenetv3_large_100",
    "mobilenetv3_small": "mobilenetv3_small_100",
    "efficientnet": "efficientnet_b0",
    "resnet18": "resnet18",
}
CAS771_STUDENT_NAMES = {"MobileNetV3": "mobilenetv3", "EfficientNet": "efficientnet", "ResNet18": "resnet18"}
DEFAULT_STUDENT = "mobilenetv3_small"  # CPU-friendly; see README "Choosing defaults"


def canonical_student(name: str) -> str:
    key = CAS771_STUDENT_NAMES.get(name, name)
    if key in STUDENTS:
        return key
    if key in STUDENTS.values():
        return next(k for k, v in STUDENTS.items() if v == key)
    raise UserError(
        f"unknown student {name!r}; use one of {sorted(STUDENTS)} "
        f"(or the seed names {sorted(CAS771_STUDENT_NAMES)})"
    )


def create_student(name: str, num_classes: int, pretrained: bool = False) -> nn.Module:
    arch = STUDENTS[canonical_student(name)]
    try:
        return timm.create_model(arch, pretrained=pretrained, num_classes=num_classes)
    except Exception as exc:  # hub/network failures surface as many exception types
        if not pretrained:
            raise
        raise UserError(
            f"could not load ImageNet weights for {arch} ({type(exc).__name__}: {exc}); "
            "run online once so timm caches them, or drop --pretrained"
        ) from exc
