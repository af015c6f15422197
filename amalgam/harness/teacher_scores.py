"""How good the teachers are: each on its own classes, and all of them combined on the union."""

from __future__ import annotations

import torch

from amalgam.distill.ensemble import TeacherEnsemble, combined_teacher_probs
from amalgam.distill.losses import uhc_union_probs
from amalgam.distill.teacher_store import compute_teacher_logits
from amalgam.tasks.images import ImageSet


def teacher_scores(ensemble: TeacherEnsemble, images: ImageSet, device: torch.device) -> dict:
    """Per teacher: accuracy on the images of its own classes; plus two union accuracies, the
    per-class mean of probabilities (`union_accuracy`) and the UHC combination (`uhc_union_accuracy`)."""
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
    uhc_pred = uhc_union_probs(logits, roster).argmax(1)
    return {
        "per_teacher": per_teacher,
        "union_accuracy": float((mean_pred == labels).float().mean()),
        "uhc_union_accuracy": float((uhc_pred == labels).float().mean()),
    }
