"""Figures a person looks at after a run: prediction grids, confusion and reliability.

The learning curve, which every run writes, lives below with the runs (`amalgam.distill.runs.curves`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from amalgam.distill.runs.curves import save_figure  # noqa: E402

RIGHT, WRONG = "green", "red"


def prediction_grid_figure(
    images: torch.Tensor, labels: torch.Tensor, preds: torch.Tensor, classes: list[str], title: str,
    columns: int = 6, max_images: int = 24,
) -> Figure:
    """One image per class first, then the rest in order; green when right, red when wrong,
    said in a legend, under a title naming the task, the student and its accuracy."""
    first = [int(torch.nonzero(labels == c)[0]) for c in range(len(classes)) if (labels == c).any()]
    rest = [i for i in range(len(labels)) if i not in set(first)]
    chosen = (first + rest)[:max(max_images, len(first))]
    rows = max(1, -(-len(chosen) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.9, rows * 2.35 + 0.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, chosen, strict=False):
        img = images[i].permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
        right = int(preds[i]) == int(labels[i])
        ax.set_title(f"true: {classes[int(labels[i])]}\npred: {classes[int(preds[i])]}",
                     fontsize=7, color=RIGHT if right else WRONG)
    fig.suptitle(title, fontsize=10)
    shown = len(chosen)
    fig.legend(handles=[Patch(color=RIGHT, label="green caption: prediction right"),
                        Patch(color=WRONG, label="red caption: prediction wrong")],
               loc="lower center", ncol=2, fontsize=8, frameon=False,
               title=f"{shown} of {len(labels)} test images, one per class first", title_fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    return fig


def prediction_grid(
    images: torch.Tensor, labels: torch.Tensor, preds: torch.Tensor, classes: list[str], path: Path,
    title: str = "sample predictions", columns: int = 6, max_images: int = 24,
) -> Path:
    fig = prediction_grid_figure(images, labels, preds, classes, title, columns, max_images)
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


def reliability_plot(
    raw: dict, scaled: dict, temperature: float, ece: float, ece_scaled: float, title: str
) -> Figure:
    """Accuracy against confidence per bin, before and after temperature scaling; each panel
    names its ECE, each bar says how many test predictions fell in its bin, and the figure
    says where the temperature came from."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    panels = ((axes[0], raw, f"raw logits: ECE {ece:.3f}"),
              (axes[1], scaled, f"logits / temperature {temperature:.2f}: ECE {ece_scaled:.3f}"))
    for ax, bins, heading in panels:
        centers = [(a + b) / 2 for a, b in zip(bins["edges"][:-1], bins["edges"][1:], strict=True)]
        width = 1 / len(centers)
        shown = [a if n else 0 for a, n in zip(bins["accuracy"], bins["count"], strict=True)]
        bars = ax.bar(centers, shown, width=width, edgecolor="black", alpha=0.7,
                      label="accuracy in the bin (number: predictions in it)")
        for bar, count in zip(bars, bins["count"], strict=True):
            if count:
                ax.annotate(str(count), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            xytext=(0, 2), textcoords="offset points", ha="center", fontsize=6)
        ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.08)
        ax.set_xlabel("confidence (top-class probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(heading, fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(title)
    fig.text(0.5, 0.01, f"temperature {temperature:.2f} fitted on the validation split by minimising NLL "
             f"(one number for all classes; it divides the logits, so the predicted class never "
             f"changes); ECE over {len(raw['count'])} equal-width bins",
             ha="center", fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    return fig


def reliability_figure(raw: dict, scaled: dict, temperature: float, path: Path, title: str,
                       ece: float, ece_scaled: float) -> Path:
    return save_figure(reliability_plot(raw, scaled, temperature, ece, ece_scaled, title), path)
