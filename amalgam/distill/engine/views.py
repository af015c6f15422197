"""Batched preprocessing on the training device: no per-sample PIL, no per-epoch decoding.

Images stay uint8 until a batch is drawn. Augmentation happens once per batch at the data's
own resolution, so the student and every teacher see the same view; each model then resizes
and normalises that view its own way (its `amalgam.models.model_input.ModelInput`: teachers
may have been trained at another size).

A flip is an exact mirror (`mirror`), so the teacher cache can hold an image's two flip views
and the trainer picks, per sample, the one the student was shown.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from amalgam.errors import UserError

AUGMENTATIONS = ("none", "flip", "crop-flip", "crop-flip-cached")
# `crop-flip-cached`: the student sees crop-flip's views, its targets are the teachers' cached
# outputs of the same image flipped as the student's but not shifted (the weak view of FixMatch's
# weak/strong split): crop-flip's views at a cached epoch's cost, the targets off by the shift.
SHIFTED_FOR_THE_STUDENT_ONLY = "crop-flip-cached"
# The fixed views each augmentation's teachers are asked about, in the order the teacher cache
# stores them; None: too many views to cache (a random crop has (2 * pad + 1)^2 shifts times
# two flips).
CACHEABLE_VIEWS: dict[str, tuple[str, ...] | None] = {
    "none": ("plain",), "flip": ("plain", "mirrored"), "crop-flip": None,
    SHIFTED_FOR_THE_STUDENT_ONLY: ("plain", "mirrored"),
}


def student_views(kind: str) -> str:
    """The augmentation whose views the student sees under `kind`: what a run without teachers
    (CE) trained alike must use to be the same schedule."""
    return "crop-flip" if kind == SHIFTED_FOR_THE_STUDENT_ONLY else kind


def to_unit_float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 → float in [0, 1] on the device (non-blocking when the source is pinned)."""
    return images.to(device, non_blocking=True).float().div_(255.0)


def mirror(view: torch.Tensor) -> torch.Tensor:
    """Left-right mirror of a batch [B, C, H, W]."""
    return view.flip(-1)


def augment_with_flips(
    view: torch.Tensor, kind: str, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The augmented batch, and which samples were mirrored (bool [B] on the CPU; None when
    no flip was drawn), so cached teacher outputs can be taken from the same view.

    Random numbers come from `generator` (CPU) so a resumed run draws the same ones.
    `flip` mirrors exactly; `crop-flip` flips and shifts with one `grid_sample` call.
    """
    if kind == "none":
        return view, None
    if kind not in AUGMENTATIONS:
        raise UserError(f"unknown augmentation {kind!r}; use one of {list(AUGMENTATIONS)}")
    kind = student_views(kind)  # crop-flip-cached: crop-flip's views; only the teachers' targets differ
    n, _, h, w = view.shape
    flip = torch.rand(n, generator=generator) < 0.5
    if kind == "flip":
        chosen = flip.to(view.device).view(n, 1, 1, 1)
        return torch.where(chosen, mirror(view), view), flip
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.where(flip, -1.0, 1.0)
    theta[:, 1, 1] = 1.0
    pad = max(1, round(min(h, w) / 8))
    shift = torch.randint(-pad, pad + 1, (n, 2), generator=generator).float()
    theta[:, 0, 2] = shift[:, 0] * 2.0 / w
    theta[:, 1, 2] = shift[:, 1] * 2.0 / h
    theta = theta.to(view.device, view.dtype)
    grid = F.affine_grid(theta, list(view.shape), align_corners=False)
    shifted = F.grid_sample(view, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return shifted, flip


def view_for_teachers(original: torch.Tensor, shown: torch.Tensor, kind: str,
                      mirrored: torch.Tensor | None) -> torch.Tensor:
    """What the teachers are asked about: the student's own view, except under
    `crop-flip-cached`, where it is the original flipped as the student's was but not shifted
    (what the cache holds, so a run whose cache is off or over budget gets the same targets)."""
    if kind != SHIFTED_FOR_THE_STUDENT_ONLY:
        return shown
    chosen = mirrored.to(original.device).view(-1, 1, 1, 1)
    return torch.where(chosen, mirror(original), original)


def augment(view: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """The augmented batch alone (see `augment_with_flips`)."""
    return augment_with_flips(view, kind, generator)[0]
