"""The learning curve every run writes, and the one way figures are saved (plots share it)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from amalgam.models.checkpoint import atomic_write_bytes  # noqa: E402


def save_figure(fig: Figure, path: Path) -> Path:
    """Written like the checkpoints: atomically, with the user's umask (models/checkpoint.py)."""
    fmt = path.suffix.lstrip(".") or "png"
    atomic_write_bytes(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of the rows that have key: runs resumed from older versions lack some."""
    rows = [r for r in history if r.get(key) is not None]
    return [r["epoch"] for r in rows], [r[key] for r in rows]


def learning_curve_figure(history: list[dict], title: str) -> Figure:
    """Three panels: the training loss with each of the method's terms (as weighted in the
    sum); cross-entropy on training batches beside validation's, the one like-for-like pair
    (the total mixes in other terms); and the scores."""
    fig, (ax_terms, ax_ce, ax_acc) = plt.subplots(1, 3, figsize=(15, 4))
    ax_terms.plot(*_series(history, "train_loss"), label="train loss (sum of terms)", linewidth=2)
    names = dict.fromkeys(name for r in history for name in (r.get("train_terms") or {}))
    for name in names:
        rows = [r for r in history if name in (r.get("train_terms") or {})]
        ax_terms.plot([r["epoch"] for r in rows], [r["train_terms"][name] for r in rows],
                      linestyle="--", marker=".", label=name)
    ax_ce.plot(*_series(history, "train_ce"), marker=".", label="train CE (augmented batches)")
    ax_ce.plot(*_series(history, "val_loss"), marker=".", label="val CE")
    ax_acc.plot(*_series(history, "train_acc"), label="train acc")
    ax_acc.plot(*_series(history, "val_acc"), label="val acc")
    ax_acc.plot(*_series(history, "val_macro_f1"), label="val macro-F1")
    panels = ((ax_terms, "training loss and its terms", "loss"),
              (ax_ce, "cross-entropy: train vs val (same quantity)", "CE"),
              (ax_acc, "scores", "score"))
    for ax, heading, ylabel in panels:
        ax.set_title(heading, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


def learning_curve(history: list[dict], path: Path, title: str) -> Path:
    return save_figure(learning_curve_figure(history, title), path)
