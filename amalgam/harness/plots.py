"""Figures a person looks at after a run: prediction grids, confusion and reliability.

The learning curve, which every run writes, lives below with the runs (`amalgam.distill.curves`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from amalgam.distill.curves import save_figure  # noqa: E402


def prediction_grid(
    images: torch.Tensor, labels: torch.Tensor, preds: torch.Tensor, classes: list[str], path: Path,
    columns: int = 6, max_images: int = 24,
) -> Path:
    """One image per class first, then the rest in order; green when right, red when wrong."""
    first = [int(torch.nonzero(labels == c)[0]) for c in range(len(classes)) if (labels == c).any()]
    rest = [i for i in range(len(labels)) if i not in set(first)]
    chosen = (first + rest)[:max(max_images, len(first))]
    rows = -(-len(chosen) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.9, rows * 2.1), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, chosen, strict=False):
        img = images[i].permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
        right = int(preds[i]) == int(labels[i])
        ax.set_title(f"true: {classes[int(labels[i])]}\npred: {classes[int(preds[i])]}",
                     fontsize=7, color="green" if right else "red")
    return save_figure(fig, path)


def confusion_figure(confusion: list[list[int]], classes: list[str], path: Path, title: str) -> Path:
    matrix = np.array(confusion)
    size = max(5, 0.5 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (r, c), value in np.ndenumerate(matrix):
        ax.text(c, r, str(value), ha="center", va="center", fontsize=7,
                color="white" if value > threshold else "black")
    ax.set_title(title)
    return save_figure(fig, path)


def reliability_figure(raw: dict, scaled: dict, temperature: float, path: Path, title: str) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, bins, name in ((axes[0], raw, "raw"), (axes[1], scaled, f"temperature {temperature:.2f}")):
        centers = [(a + b) / 2 for a, b in zip(bins["edges"][:-1], bins["edges"][1:], strict=True)]
        width = 1 / len(centers)
        shown = [a if n else 0 for a, n in zip(bins["accuracy"], bins["count"], strict=True)]
        ax.bar(centers, shown, width=width, edgecolor="black", alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)
