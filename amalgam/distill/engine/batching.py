"""Batches and whole-set predictions: shuffles drawn from generators seeded by (seed, epoch), so
a resumed run sees the same batches, and logits for a set in fixed order for scoring."""

from __future__ import annotations

from collections.abc import Callable

import torch

from amalgam.distill.engine.views import to_unit_float
from amalgam.models.model_input import ModelInput
from amalgam.tasks.images import ImageSet


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def batch_indices(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled batches; a trailing batch of one is dropped (BatchNorm cannot train on it)."""
    order = torch.randperm(n, generator=generator)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches.pop()
    return batches


@torch.no_grad()
def predict_logits(
    predict: Callable[[torch.Tensor], torch.Tensor],
    model_input: ModelInput,
    images: ImageSet,
    device: torch.device,
    batch_size: int = 256,
) -> torch.Tensor:
    """Logits for a whole image set in fixed order (no augmentation)."""
    outputs = []
    for start in range(0, len(images), batch_size):
        view = to_unit_float(images.images[start : start + batch_size], device)
        outputs.append(predict(model_input(view)).float().cpu())
    return torch.cat(outputs) if outputs else torch.zeros(0)
