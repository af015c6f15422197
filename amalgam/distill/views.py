"""Batched preprocessing on the training device: no per-sample PIL, no per-epoch decoding.

Images stay uint8 until a batch is drawn. Augmentation happens once per batch at the data's
own resolution, so the student and every teacher see the same view; each model then resizes
and normalises that view its own way (its `amalgam.models.model_input.ModelInput`: teachers
may have been trained at another size).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from amalgam.errors import UserError

AUGMENTATIONS = ("none", "flip", "crop-flip")


def to_unit_float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 → float in [0, 1] on the device (non-blocking when the source is pinned)."""
    return images.to(device, non_blocking=True).float().div_(255.0)


def augment(view: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Random flip and/or translation of a whole batch with one `grid_sample` call.

    Random numbers come from `generator` (CPU) so a resumed run draws the same ones.
    """
    if kind == "none":
        return view
    if kind not in AUGMENTATIONS:
        raise UserError(f"unknown augmentation {kind!r}; use one of {list(AUGMENTATIONS)}")
    n, _, h, w = view.shape
    flip = torch.rand(n, generator=generator) < 0.5
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.where(flip, -1.0, 1.0)
    theta[:, 1, 1] = 1.0
    if kind == "crop-flip":
        pad = max(1, round(min(h, w) / 8))
        shift = torch.randint(-pad, pad + 1, (n, 2), generator=generator).float()
        theta[:, 0, 2] = shift[:, 0] * 2.0 / w
        theta[:, 1, 2] = shift[:, 1] * 2.0 / h
    theta = theta.to(view.device, view.dtype)
    grid = F.affine_grid(theta, list(view.shape), align_corners=False)
    return F.grid_sample(view, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
