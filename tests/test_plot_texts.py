"""The figures say what they show: titles, legends, ECE values, bin counts, loss terms.

Read from the matplotlib objects the plotting functions build (no image comparison)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from amalgam.distill.runs.curves import learning_curve_figure
from amalgam.harness.plots import prediction_grid_figure, reliability_plot
from amalgam.models.metrics import reliability_bins


def texts(fig) -> list[str]:
    """Every text on the figure: suptitle, axes titles, legend entries and titles, annotations."""
    found = [t.get_text() for t in fig.findobj(match=lambda a: hasattr(a, "get_text"))]
    return [t for t in found if t]


def legend_labels(legend) -> list[str]:
    return [t.get_text() for t in legend.get_texts()]


def test_sample_predictions_have_a_title_and_a_colour_legend():
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    preds = torch.tensor([0, 2, 2, 1, 1, 2])
    images = torch.zeros(6, 3, 8, 8, dtype=torch.uint8)
    title = "task B: run_kd/best, test accuracy 66.67 % (6 images)"

    fig = prediction_grid_figure(images, labels, preds, ["x", "y", "z"], title)

    assert fig._suptitle.get_text() == title
    (legend,) = fig.legends
    assert legend_labels(legend) == ["green caption: prediction right", "red caption: prediction wrong"]
    assert "6 of 6 test images" in legend.get_title().get_text()
    captions = [ax.title for ax in fig.axes if ax.get_title()]
    assert [c.get_color() for c in captions] == ["green", "red", "green", "red", "green", "green"]
    plt.close(fig)


def test_reliability_names_the_ece_values_the_bin_counts_and_the_temperature():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 4, generator=generator) * 3
    labels = torch.randint(0, 4, (200,), generator=generator)
    raw, scaled = reliability_bins(logits, labels), reliability_bins(logits / 1.54, labels)

    fig = reliability_plot(raw, scaled, 1.54, 0.1234, 0.0456, "task B: calibration on the test split")

    left, right = fig.axes
    assert left.get_title() == "raw logits: ECE 0.123"
    assert right.get_title() == "logits / temperature 1.54: ECE 0.046"
    for ax, bins in ((left, raw), (right, scaled)):
        counts = [t.get_text() for t in ax.texts]
        assert counts == [str(n) for n in bins["count"] if n]
        assert sum(map(int, counts)) == 200
        assert legend_labels(ax.get_legend()) == [
            "perfect calibration", "accuracy in the bin (number: predictions in it)"]
    assert any("temperature 1.54 fitted on the validation split by minimising NLL" in t for t in texts(fig))
    assert fig._suptitle.get_text() == "task B: calibration on the test split"
    plt.close(fig)


def test_learning_curve_shows_each_term_and_a_like_for_like_ce_pair():
    history = [
        {"epoch": e, "train_loss": 7.8 / e, "train_acc": 0.5, "val_loss": 0.64, "val_acc": 0.6,
         "val_macro_f1": 0.55, "train_ce": 0.6 / e, "train_terms": {"loss_ce": 0.6 / e, "loss_hint": 7.2 / e}}
        for e in (1, 2, 3)
    ]
    history.insert(0, {"epoch": 0, "train_loss": 9.0, "train_acc": 0.1, "val_loss": 2.0, "val_acc": 0.1,
                       "val_macro_f1": 0.1})  # a row written before terms were logged is still drawn

    fig = learning_curve_figure(history, "task B: mobilenetv3_small, fitnet")

    terms, ce, scores = fig.axes
    assert legend_labels(terms.get_legend()) == ["train loss (sum of terms)", "loss_ce", "loss_hint"]
    assert legend_labels(ce.get_legend()) == ["train CE (augmented batches)", "val CE"]
    hint = next(line for line in terms.get_lines() if line.get_label() == "loss_hint")
    assert list(hint.get_xdata()) == [1, 2, 3] and hint.get_ydata()[0] == 7.2
    train_ce, val_ce = ce.get_lines()
    assert list(train_ce.get_xdata()) == [1, 2, 3] and list(val_ce.get_xdata()) == [0, 1, 2, 3]
    assert "same quantity" in ce.get_title()
    assert fig._suptitle.get_text() == "task B: mobilenetv3_small, fitnet"
    plt.close(fig)
