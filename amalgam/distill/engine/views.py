"""Batched preprocessing on the training device: no per-sample PIL, no per-epoch decoding.

Images stay uint8 until a batch is drawn. Augmentation happens once per batch at the data's
own resolution, so the student and every teacher see the same view; each model then resizes
and normalises that view its own way (its `amalgam.models.model_input.ModelInput`: teachers
may have been trained at another size).

A flip is an exact mirror (`mirror`), so the teacher cache can hold an image's two flip views
and the trainer picks, per sample, the one the student was shown.

`strong` is consistency teaching (FixMatch, Sohn et al. 2020; Noisy Student, Xie et al. 2020):
the teachers see the flipped view the cache holds, the student a harder view of that same image
(shifted, jittered and partly erased, `strong_view`), so it must match the teachers' answer on an
image it sees worse; the teachers' cost stays a cache lookup.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from amalgam.errors import UserError

AUGMENTATIONS = ("none", "flip", "crop-flip", "strong")
# The fixed views each augmentation can show, in the order the teacher cache stores them;
# None: too many views to cache (a random crop has (2 * pad + 1)^2 shifts times two flips).
CACHEABLE_VIEWS: dict[str, tuple[str, ...] | None] = {
    "none": ("plain",), "flip": ("plain", "mirrored"), "crop-flip": None,
    "strong": ("plain", "mirrored"),  # the teachers see the flip; only the student's view is strong
}
# `strong_view`'s strength: shifts of up to 1/8 of the side (crop-flip's), brightness and contrast
# factors in [1 - JITTER, 1 + JITTER], and one erased square of half the side (Cutout, DeVries and
# Taylor 2017: half of CIFAR's 32 px).
JITTER = 0.4
ERASED_FRACTION = 0.5


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
    `flip` (and `strong`, for the teachers' view) mirrors exactly; `crop-flip` flips and shifts
    with one `grid_sample` call.
    """
    if kind == "none":
        return view, None
    if kind not in AUGMENTATIONS:
        raise UserError(f"unknown augmentation {kind!r}; use one of {list(AUGMENTATIONS)}")
    n = view.shape[0]
    flip = torch.rand(n, generator=generator) < 0.5
    if kind in ("flip", "strong"):
        chosen = flip.to(view.device).view(n, 1, 1, 1)
        return torch.where(chosen, mirror(view), view), flip
    return shifted(view, generator, flip), flip


def shifted(view: torch.Tensor, generator: torch.Generator, flip: torch.Tensor | None = None) -> torch.Tensor:
    """Each image moved by a random whole-pixel shift of up to 1/8 of its side (zeros fill in),
    and mirrored where `flip` says, with one `grid_sample` call."""
    n, _, h, w = view.shape
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = 1.0 if flip is None else torch.where(flip, -1.0, 1.0)
    theta[:, 1, 1] = 1.0
    pad = max(1, round(min(h, w) / 8))
    shift = torch.randint(-pad, pad + 1, (n, 2), generator=generator).float()
    theta[:, 0, 2] = shift[:, 0] * 2.0 / w
    theta[:, 1, 2] = shift[:, 1] * 2.0 / h
    theta = theta.to(view.device, view.dtype)
    grid = F.affine_grid(theta, list(view.shape), align_corners=False)
    return F.grid_sample(view, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def jittered(view: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per image, brightness and contrast scaled by random factors in [1 - JITTER, 1 + JITTER]
    (contrast about the image's mean), clipped to [0, 1]."""
    n = view.shape[0]
    factors = 1.0 + JITTER * (2.0 * torch.rand(2, n, 1, 1, 1, generator=generator) - 1.0)
    brightness, contrast = factors.to(view.device, view.dtype)
    mean = view.mean(dim=(1, 2, 3), keepdim=True)
    return ((view - mean) * contrast + mean * brightness).clamp_(0.0, 1.0)


def erased(view: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per image, one square of ERASED_FRACTION of its side, centred anywhere (cut at the
    borders), filled with the image's mean per channel (Cutout)."""
    n, _, h, w = view.shape
    side = max(1, round(min(h, w) * ERASED_FRACTION))
    centre = (torch.rand(n, 2, generator=generator) * torch.tensor([h, w])).long().to(view.device)
    rows = torch.arange(h, device=view.device).view(1, h, 1)
    cols = torch.arange(w, device=view.device).view(1, 1, w)
    top, left = centre[:, 0].view(n, 1, 1) - side // 2, centre[:, 1].view(n, 1, 1) - side // 2
    inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    mean = view.mean(dim=(2, 3), keepdim=True)
    return torch.where(inside.unsqueeze(1), mean, view)


def strong_view(view: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The student's view under `--augment strong`: `view` shifted, jittered and erased."""
    return erased(jittered(shifted(view, generator), generator), generator)


def training_views(
    view: torch.Tensor, kind: str, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(the student's view, the teachers' view, which samples were mirrored): the same view for
    both except under `strong`, where the student sees `strong_view` of the teachers' flip."""
    teachers_view, mirrored = augment_with_flips(view, kind, generator)
    if kind != "strong":
        return teachers_view, teachers_view, mirrored
    return strong_view(teachers_view, generator), teachers_view, mirrored


def augment(view: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """The augmented batch alone (see `augment_with_flips`)."""
    return augment_with_flips(view, kind, generator)[0]
