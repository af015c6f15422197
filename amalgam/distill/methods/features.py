"""Shared by the feature-based methods: bringing two feature maps to one spatial size."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def match_spatial(source: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pool a larger map down, or interpolate a smaller one up, to `size`."""
    if tuple(source.shape[-2:]) == tuple(size):
        return source
    if source.shape[-2] >= size[0] and source.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(source, size)
    return F.interpolate(source, size=size, mode="bilinear", align_corners=False)


def common_size(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int]:
    """SimKD's rule: compare at the smaller of the two spatial sizes."""
    return (min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1]))
