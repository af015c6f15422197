"""Load a task's teachers, ours or the CAS771 reference app's, as one frozen ensemble."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from amalgam import PROJECT_ROOT
from amalgam.distill.ensemble import TeacherEnsemble
from amalgam.models.cas771_format import cas771_teacher_card, load_cas771_teacher
from amalgam.models.checkpoint import ModelCard, load_model
from amalgam.models.model_input import ModelInput, model_input_for
from amalgam.tasks.spec import CAS771_FORMAT, TaskSpec, resolve_checkpoint_stem


def load_teachers(
    spec: TaskSpec, root: Path = PROJECT_ROOT
) -> tuple[list[nn.Module], list[ModelInput], list[ModelCard]]:
    """Each teacher's model and input recipe, checked against the roster's class lists."""
    models, inputs, cards = [], [], []
    for teacher in spec.teachers:
        path = resolve_checkpoint_stem(spec, teacher, root)
        if teacher.format == CAS771_FORMAT:  # the reference app's bare .pth: its custom CNN, no card
            stats = spec.data.options
            model, model_input = load_cas771_teacher(
                path, teacher.classes, spec.img_size, stats.get("mean"), stats.get("std")
            )
            card = cas771_teacher_card(teacher.classes, model_input, spec.name)
        else:
            model, card = load_model(path, teacher.classes)
        models.append(model)
        inputs.append(model_input_for(card))
        cards.append(card)
    return models, inputs, cards


def load_ensemble(spec: TaskSpec, device: torch.device, root: Path = PROJECT_ROOT) -> TeacherEnsemble:
    models, inputs, _ = load_teachers(spec, root)
    return TeacherEnsemble(models, inputs, spec.roster()).to(device)
