"""The learning curve every run writes, and the one way figures are saved (plots share it)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def learning_curve(history: list[dict], path: Path, title: str) -> Path:
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], label="train loss")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], label="val loss (CE)")
    ax_acc.plot(epochs, [r["train_acc"] for r in history], label="train acc")
    ax_acc.plot(epochs, [r["val_acc"] for r in history], label="val acc")
    ax_acc.plot(epochs, [r["val_macro_f1"] for r in history], label="val macro-F1")
    for ax, name in ((ax_loss, "loss"), (ax_acc, "score")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return save_figure(fig, path)
