"""Scores from logits and labels: pure functions, shared by training, evaluation and reports."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import (
    multiclass_calibration_error,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)

ECE_BINS = 15


def classification_scores(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Accuracy, macro-F1, per-class figures, confusion matrix, NLL and ECE (15 bins)."""
    logits, labels = logits.float().cpu(), labels.cpu()
    preds = logits.argmax(dim=1)
    confusion = multiclass_confusion_matrix(preds, labels, num_classes)
    support = confusion.sum(dim=1)
    per_class_acc = confusion.diag().float() / support.clamp_min(1).float()
    per_class_f1 = multiclass_f1_score(preds, labels, num_classes, average="none")
    present = support > 0
    return {
        "accuracy": float((preds == labels).float().mean()),
        "macro_f1": float(per_class_f1[present].mean()) if present.any() else 0.0,
        "per_class_accuracy": per_class_acc.tolist(),
        "per_class_f1": per_class_f1.tolist(),
        "support": support.tolist(),
        "confusion_matrix": confusion.tolist(),
        "nll": float(F.cross_entropy(logits, labels)),
        "ece": expected_calibration_error(logits, labels, num_classes),
    }


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    probs = torch.softmax(logits.float(), dim=1)
    return float(
        multiclass_calibration_error(probs, labels, num_classes, n_bins=ECE_BINS, norm="l1")
    )


def reliability_bins(logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> dict:
    """Per-bin confidence, accuracy and count for a reliability diagram."""
    probs = torch.softmax(logits.float(), dim=1)
    confidence, preds = probs.max(dim=1)
    correct = (preds == labels).float()
    which = torch.clamp((confidence * bins).long(), max=bins - 1)
    count = torch.bincount(which, minlength=bins).float()
    conf_sum = torch.bincount(which, weights=confidence, minlength=bins)
    acc_sum = torch.bincount(which, weights=correct, minlength=bins)
    nonzero = count.clamp_min(1)
    return {
        "edges": torch.linspace(0, 1, bins + 1).tolist(),
        "confidence": (conf_sum / nonzero).tolist(),
        "accuracy": (acc_sum / nonzero).tolist(),
        "count": count.long().tolist(),
    }


class NonFiniteLogits(ValueError):
    """Logits holding NaN or inf: no temperature (or score) can be fitted to them."""


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """One global temperature minimising NLL on held-out (validation) logits."""
    logits, labels = logits.float().detach().cpu(), labels.cpu()
    if not torch.isfinite(logits).all():
        raise NonFiniteLogits("logits hold NaN or inf; no temperature can be fitted")
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def teacher_pair_errors(predictions: torch.Tensor, labels: torch.Tensor, coverage: torch.Tensor) -> dict:
    """Split the error rate by whether any one teacher knows both the true and the predicted class.

    `coverage` [K, C] is the roster's class coverage. Teachers can only teach a distinction
    they have seen: errors between classes no teacher shares (e.g. T-shirt vs Shirt when
    they belong to different teachers) are ones only the labels can fix.
    """
    wrong = predictions != labels
    coverage = coverage.to(labels.device)
    shared = (coverage[:, labels] & coverage[:, predictions]).any(dim=0)
    n = max(len(labels), 1)
    return {
        "errors_shared_teacher": float((wrong & shared).sum()) / n,
        "errors_no_shared_teacher": float((wrong & ~shared).sum()) / n,
    }
