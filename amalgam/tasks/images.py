"""In-memory image sets: uint8 tensors, so a whole task is decoded once and never per epoch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from amalgam.errors import UserError


@dataclass(frozen=True)
class ImageSet:
    """Images as uint8 [N, C, H, W] and their labels as int64 [N], in one label space."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise UserError(
                f"images must be uint8 [N, C, H, W], got {self.images.dtype} "
                f"{tuple(self.images.shape)}; convert the data to 8-bit images"
            )
        if self.labels.ndim != 1 or len(self.labels) != len(self.images):
            raise UserError(
                f"{len(self.images)} images but labels of shape {tuple(self.labels.shape)}; "
                "give one label per image"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index])

    @staticmethod
    def concat(parts: list[ImageSet]) -> ImageSet:
        return ImageSet(
            torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts])
        )


def check_labels(labels: torch.Tensor, num_classes: int, where: str) -> None:
    """Labels outside the task's classes mean the data and the task disagree: say where."""
    if len(labels) == 0:
        raise UserError(f"{where} holds no images; check the data path")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if len(bad):
        raise UserError(
            f"{where} has label {int(bad[0])} outside the task's {num_classes} classes "
            f"(0..{num_classes - 1}); fix the data or the task's class list"
        )


def stratified_split(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Carve a validation part out of each class with a fixed seed (same split every run)."""
    if not 0.0 < fraction < 1.0:
        raise UserError(f"--val-fraction must be between 0 and 1 (exclusive), got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for cls in labels.unique(sorted=True).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n_val = max(1, round(len(idx) * fraction)) if len(idx) > 1 else 0
        held.append(idx[:n_val])
        keep.append(idx[n_val:])
    return torch.cat(keep).sort().values, torch.cat(held).sort().values


def limit_per_class(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices keeping at most `per_class` images of each class, chosen with a fixed seed."""
    if per_class < 1:
        raise UserError(f"--train-per-class must be at least 1, got {per_class}")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for cls in labels.unique(sorted=True).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        chosen.append(idx[torch.randperm(len(idx), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values
