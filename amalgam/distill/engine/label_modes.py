"""`--labels`: whether training may read the training labels (`train`) or never does (`none`).

With `none` the trainer hands the method no labels at all (and the label-free training set,
labeled images plus the task's unlabeled ones, carries none), so "the loss never reads a
label" holds by construction, not by a method's promise. Only methods that declare
`needs_labels = False` can run that way; any other is refused before any work, by name.
Validation labels are still used, only to choose the checkpoint and to report.
"""

from __future__ import annotations

from dataclasses import replace

from amalgam.distill.methods import METHODS
from amalgam.errors import UserError
from amalgam.tasks.loader import TaskData
from amalgam.ui import say

LABEL_MODES = ("train", "none")
LABELED, LABEL_FREE = LABEL_MODES


def label_free_methods() -> list[str]:
    """The methods whose loss reads no label, in registry order."""
    return [name for name, factory in METHODS.items() if not factory.needs_labels]


def check_labels_mode(method: str, labels: str, class_prior: str = "none") -> None:
    """Refuse an unknown mode, or `--labels none` with a method or a class prior that reads labels."""
    if labels not in LABEL_MODES:
        raise UserError(f"--labels must be one of: {', '.join(LABEL_MODES)}; got {labels!r}")
    if labels == LABEL_FREE and method in METHODS and METHODS[method].needs_labels:
        raise UserError(f"method {method!r} reads training labels, so it cannot train with --labels none; "
                        f"use a label-free method: {', '.join(label_free_methods())}")
    if labels == LABEL_FREE and class_prior == "labels":
        raise UserError("--class-prior labels reads the training labels' class frequencies, so it cannot "
                        "train with --labels none; use --class-prior uniform (balanced classes) or none")


def training_data(data: TaskData, labels: str, quiet: bool = False) -> TaskData:
    """The task data a run trains on: as loaded, or under `--labels none` with the training set
    replaced by the labeled images plus the task's unlabeled ones, all labels erased."""
    if labels == LABEL_FREE:
        return replace(data, train=data.label_free_train())
    if data.unlabeled is not None:
        say(f"note: the task's {len(data.unlabeled)} unlabeled images are used only with --labels none "
            "(a label-free method); this run trains on the labeled images alone", quiet)
    return data
