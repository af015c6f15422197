"""How a model wants its input: size, channels and normalisation, applied to a batch on the device.

A model's checkpoint card, export metadata or the cas771 format says which `ModelInput` it takes;
training, evaluation and export all prepare images through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from amalgam.errors import UserError
from amalgam.models.checkpoint import ModelCard


@dataclass(frozen=True)
class ModelInput:
    """How one model wants its input: square size, channels and normalisation."""

    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_chans: int = 3

    def __call__(self, view: torch.Tensor) -> torch.Tensor:
        x = view
        if x.shape[1] == 1 and self.in_chans == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != self.in_chans:
            raise UserError(
                f"images have {x.shape[1]} channels but the model expects {self.in_chans}; "
                "check the task's `channels` setting"
            )
        if x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
            shrinking = x.shape[-1] > self.img_size
            x = F.interpolate(
                x, size=(self.img_size, self.img_size), mode="bilinear",
                align_corners=False, antialias=shrinking,
            )
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std


def model_input_for(card: ModelCard) -> ModelInput:
    return ModelInput(card.img_size, tuple(card.mean), tuple(card.std), card.in_chans)
