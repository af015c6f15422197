"""`amalgam.Teacher`: a module a user already holds, with its classes and the input it wants."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from amalgam.distill.engine.views import to_unit_float
from amalgam.distill.methods import Method
from amalgam.distill.teachers.given import GivenTeachers, module_digest, prepare_teacher
from amalgam.errors import UserError
from amalgam.models.model_input import ModelInput
from amalgam.tasks.images import ImageSet
from amalgam.tasks.spec import TeacherSpec

IN_MEMORY_ARCH = "cnn-small"  # what a TeacherSpec must name; an in-memory teacher is never rebuilt from it


@dataclass
class Teacher:
    """A frozen classifier that knows some of the task's classes.

    `module` maps a batch of images [B, C, H, W] to logits [B, len(classes)], over `classes` in
    the order of its outputs. It is fed images resized to `img_size` (default: the data's size)
    and normalised with `mean`/`std` in [0, 1] units (default: the training data's statistics),
    with `in_chans` channels (grayscale data is repeated to 3). Hint-based methods read its
    features from timm's `forward_features` where it has one, else from its last 4-D activation
    (the last map larger than 1 x 1, i.e. before global pooling);
    a teacher with neither teaches through its logits only.
    """

    module: nn.Module
    classes: Sequence[str]
    img_size: int | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    name: str | None = None
    in_chans: int = 3


def teacher_specs(teachers: Sequence[Teacher], classes: Sequence[str]) -> tuple[TeacherSpec, ...]:
    """The roster, after the checks whose messages speak of `classes` rather than of a task file."""
    if not teachers:
        raise UserError("no teachers given; pass a list of amalgam.Teacher(module, classes=[...])")
    specs = []
    for k, teacher in enumerate(teachers, start=1):
        if not isinstance(teacher, Teacher):
            raise UserError(f"teacher {k} is a {type(teacher).__name__}; wrap each module as "
                            "amalgam.Teacher(module, classes=[...])")
        name = teacher.name or f"teacher_{k}"
        unknown = [c for c in teacher.classes if c not in classes]
        if unknown:
            raise UserError(f"teacher {name!r} names class(es) {unknown} that are not in classes "
                            f"{list(classes)}; use names from classes")
        specs.append(TeacherSpec(name, tuple(teacher.classes), IN_MEMORY_ARCH))
    return tuple(specs)


def given_teachers(
    teachers: Sequence[Teacher], specs: Sequence[TeacherSpec], train: ImageSet,
    stats: tuple[tuple[float, ...], tuple[float, ...]],
) -> GivenTeachers:
    """Each teacher ready to run, its output width checked on two training images."""
    models, inputs, digests, with_features, own_heads = [], [], [], [], []
    view = to_unit_float(train.images[:2], torch.device("cpu"))
    for teacher, spec in zip(teachers, specs, strict=True):
        model_input = ModelInput(
            teacher.img_size or int(train.images.shape[-1]),
            tuple(float(v) for v in (stats[0] if teacher.mean is None else teacher.mean)),
            tuple(float(v) for v in (stats[1] if teacher.std is None else teacher.std)), teacher.in_chans,
        )
        example = model_input(view)
        module = teacher.module.cpu().eval()
        check_output_width(module, spec, example)
        prepared, has_features, own_head = prepare_teacher(module, spec.name, example)
        models.append(prepared)
        inputs.append(model_input)
        digests.append(module_digest(module))
        with_features.append(has_features)
        own_heads.append(own_head)
    return GivenTeachers(models, inputs, digests, with_features, own_heads)


def check_output_width(module: nn.Module, spec: TeacherSpec, example: torch.Tensor) -> None:
    try:
        with torch.no_grad():
            logits = module(example)
    except Exception as exc:  # a user's module can fail in any way; say which and on what input
        raise UserError(f"teacher {spec.name!r} failed on a batch of shape {tuple(example.shape)} "
                        f"({type(exc).__name__}: {exc}); check its img_size and in_chans") from exc
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise UserError(f"teacher {spec.name!r} returns {shape}, not logits [batch, classes]; "
                        "give a module that maps images to logits")
    if logits.shape[1] != len(spec.classes):
        raise UserError(f"teacher {spec.name!r} outputs {logits.shape[1]} logits but lists "
                        f"{len(spec.classes)} classes; list its classes in the order of its outputs")


def reuses_teacher_heads(method: Method) -> bool:
    """Whether the method runs a teacher's classifier on other features (SimKD's predict)."""
    predictors = getattr(method, "predictors", None)  # a sum of terms: the part with its own predict
    if predictors is not None:
        return bool(predictors)
    return type(method).predict is not Method.predict
