"""How good the teachers are: each on its own classes, and all of them combined on the union."""

from __future__ import annotations

import torch

from amalgam.distill.losses import uhc_union_probs
from amalgam.distill.losses.targets import combined_teacher_probs
from amalgam.distill.methods import MethodOptions, build_method
from amalgam.distill.teachers.ensemble import TeacherEnsemble
from amalgam.distill.teachers.store import compute_teacher_logits
from amalgam.tasks.images import ImageSet


def teacher_scores(
    ensemble: TeacherEnsemble, images: ImageSet, device: torch.device, balance_on: ImageSet | None = None
) -> dict:
    """Per teacher: accuracy on the images of its own classes; plus the union accuracies of the
    per-class mean of probabilities (`union_accuracy`), the UHC combination (`uhc_union_accuracy`)
    and, given `balance_on` (the training images; their labels are not read), the UHC combination
    balanced over them as `--class-prior uniform` balances it (`uhc_balanced_accuracy`)."""
    roster = ensemble.roster
    logits = compute_teacher_logits(ensemble, images, device, quiet=True)
    labels = images.labels
    per_teacher = {}
    for k, name in enumerate(roster.teacher_names):
        own = roster.coverage[k, labels]
        width = int(roster.local_mask[k].sum())
        predicted_global = roster.local_to_global[k, logits[own, k, :width].argmax(1)]
        per_teacher[name] = float((predicted_global == labels[own]).float().mean()) if own.any() else 0.0
    mean_pred = combined_teacher_probs(logits, roster).argmax(1)
    uhc = uhc_union_probs(logits, roster)
    scores = {
        "per_teacher": per_teacher,
        "union_accuracy": float((mean_pred == labels).float().mean()),
        "uhc_union_accuracy": float((uhc.argmax(1) == labels).float().mean()),
    }
    if balance_on is not None:
        balanced = build_method("amalgam-kd", roster, MethodOptions(class_prior="uniform"))
        balanced.fit_to_training_set(compute_teacher_logits(ensemble, balance_on, device, quiet=True))
        balanced_pred = balanced.targets(logits, 1.0).argmax(1)
        scores["uhc_balanced_accuracy"] = float((balanced_pred == labels).float().mean())
    return scores
