"""Load a task's teachers, ours or the CAS771 reference app's, as one frozen ensemble."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from amalgam import PROJECT_ROOT
from amalgam.distill.teachers.ensemble import TeacherEnsemble
from amalgam.distill.teachers.given import GivenTeachers
from amalgam.errors import UserError
from amalgam.models.cas771_format import cas771_teacher_card, load_cas771_teacher
from amalgam.models.checkpoint import ModelCard, checkpoint_files, load_model
from amalgam.models.model_input import ModelInput, model_input_for
from amalgam.tasks.spec import CAS771_FORMAT, TaskSpec, resolve_checkpoint_stem
from amalgam.tasks.teacher_recipes import teachers_command
from amalgam.ui import say

Stats = tuple[tuple[float, ...] | list[float], tuple[float, ...] | list[float]]


def load_teachers(
    spec: TaskSpec, root: Path = PROJECT_ROOT, stats: Stats | None = None
) -> tuple[list[nn.Module], list[ModelInput], list[ModelCard]]:
    """Each teacher's model and input recipe, checked against the roster's class lists.

    `stats` (mean, std) is the task's training split's normalisation: the reference app fed its
    teachers images normalised with it, so its bare .pth teachers get it too (a task that pins
    mean/std wins; with neither, ImageNet's). Our own teachers carry theirs in their cards.
    """
    models, inputs, cards = [], [], []
    pinned = spec.data.options
    pins = "mean" in pinned and "std" in pinned
    mean, std = (pinned["mean"], pinned["std"]) if pins else (stats or (None, None))
    rank0 = os.environ.get("RANK", "0") == "0"  # under torchrun, say it once
    for teacher in spec.teachers:
        path = resolve_checkpoint_stem(spec, teacher, root)
        if teacher.format == CAS771_FORMAT:  # the reference app's bare .pth: its custom CNN, no card
            say(f"{teacher.name}: the CAS771 reference teacher {path}", quiet=not rank0)
            model, model_input = load_cas771_teacher(path, teacher.classes, spec.img_size, mean, std)
            card = cas771_teacher_card(teacher.classes, model_input, spec.name)
        else:
            if not teacher.checkpoint and not checkpoint_files(path)[0].exists():
                raise UserError(f"teacher {teacher.name} of task {spec.name} is not trained ({path}"
                                f".safetensors is missing); train the task's teachers first: "
                                f"`{teachers_command(spec)}`")
            model, card = load_model(path, teacher.classes)
        check_finite_weights(model, teacher.name, path)
        models.append(model)
        inputs.append(model_input_for(card))
        cards.append(card)
    return models, inputs, cards


def check_finite_weights(model: nn.Module, name: str, path: Path) -> None:
    """A teacher with NaN or inf weights makes every loss NaN, which training would otherwise
    blame on --lr or --temperature; name the teacher instead."""
    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(f"teacher {name} ({path}) has non-finite weights (NaN or inf in {key}): its "
                            "checkpoint is damaged; retrain it with `python train.py teachers` or restore it")


def load_given_teachers(
    spec: TaskSpec, root: Path = PROJECT_ROOT, stats: Stats | None = None
) -> GivenTeachers:
    """The task's teachers as a run takes them, whether from checkpoints (here) or handed over as
    modules (amalgam.distil): ours and the reference app's all have timm's split; the cache keys
    them by their files (no digest)."""
    models, inputs, _ = load_teachers(spec, root, stats)
    count = len(models)
    return GivenTeachers(models, inputs, [None] * count, [True] * count, [True] * count)


def load_ensemble(
    spec: TaskSpec, device: torch.device, root: Path = PROJECT_ROOT, stats: Stats | None = None
) -> TeacherEnsemble:
    models, inputs, _ = load_teachers(spec, root, stats)
    return TeacherEnsemble(models, inputs, spec.roster()).to(device)
