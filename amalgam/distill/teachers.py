"""Train each partial teacher on its own classes, and load a task's teachers for distillation."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn

from amalgam import PROJECT_ROOT
from amalgam.distill.ensemble import TeacherEnsemble
from amalgam.distill.methods import MethodOptions, build_method
from amalgam.distill.trainer import TrainConfig, Trainer, predict_logits
from amalgam.distill.views import ModelInput
from amalgam.harness.metrics import classification_scores
from amalgam.models.checkpoint import ModelCard, load_model, save_checkpoint
from amalgam.models.teachers import create_teacher
from amalgam.tasks.loader import TaskData
from amalgam.tasks.spec import Roster, TaskSpec, TeacherSpec, resolve_checkpoint_stem
from amalgam.ui import say


@dataclass(frozen=True)
class TeacherReport:
    name: str
    classes: tuple[str, ...]
    checkpoint: Path
    val_accuracy: float
    test_accuracy: float


def model_input_for(card: ModelCard) -> ModelInput:
    return ModelInput(card.img_size, tuple(card.mean), tuple(card.std), card.in_chans)


def train_teacher(
    data: TaskData, teacher: TeacherSpec, config: TrainConfig, img_size: int, root: Path
) -> TeacherReport:
    """Train on the teacher's classes only; keep the epoch with the best validation accuracy."""
    spec = data.spec
    train, val = data.for_teacher(teacher, "train"), data.for_teacher(teacher, "val")
    torch.manual_seed(config.seed)
    model = create_teacher(teacher.arch, len(teacher.classes))
    model_input = ModelInput(img_size, data.mean, data.std)
    roster = Roster.from_spec(spec)  # CE ignores it; methods share one constructor
    trainer = Trainer(
        model,
        build_method("ce", roster, MethodOptions()),
        model_input,
        train,
        val,
        len(teacher.classes),
        config,
    )
    best_state, best_acc = None, -1.0
    for _ in range(config.epochs):
        row = trainer.train_epoch()
        if row["val_acc"] > best_acc:
            best_acc, best_state = row["val_acc"], copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    test = data.for_teacher(teacher, "test")
    test_scores = classification_scores(
        predict_logits(model, model_input, test, trainer.device), test.labels, len(teacher.classes)
    )
    card = ModelCard(
        kind="teacher",
        arch=teacher.arch,
        classes=list(teacher.classes),
        img_size=img_size,
        mean=list(data.mean),
        std=list(data.std),
        task=spec.name,
        metrics={"val_accuracy": best_acc, "test_accuracy_own_classes": test_scores["accuracy"]},
        trained_on={
            "task": spec.name,
            "split": "train",
            "images": len(train),
            "epochs": config.epochs,
            "seed": config.seed,
        },
    )
    stem = save_checkpoint(resolve_checkpoint_stem(spec, teacher, root), model.state_dict(), card)
    return TeacherReport(teacher.name, teacher.classes, stem, best_acc, test_scores["accuracy"])


def train_all_teachers(
    data: TaskData, config: TrainConfig, img_size: int, root: Path = PROJECT_ROOT
) -> list[TeacherReport]:
    reports = []
    for teacher in data.spec.teachers:
        if teacher.format == "seed":
            say(f"{teacher.name}: released seed-format checkpoint, not retrained", config.quiet)
            continue
        say(f"training {teacher.name} on {len(teacher.classes)} classes", config.quiet)
        report = train_teacher(data, teacher, replace(config), img_size, root)
        say(
            f"  {teacher.name}: val {report.val_accuracy:.2%}, test {report.test_accuracy:.2%} "
            f"on its own classes → {report.checkpoint}",
            config.quiet,
        )
        reports.append(report)
    return reports


def load_teachers(
    spec: TaskSpec, root: Path = PROJECT_ROOT
) -> tuple[list[nn.Module], list[ModelInput], list[ModelCard]]:
    """Each teacher's model and input recipe, checked against the roster's class lists."""
    models, inputs, cards = [], [], []
    for teacher in spec.teachers:
        path = resolve_checkpoint_stem(spec, teacher, root)
        if teacher.format == "seed":  # the seed app's bare .pth: its custom CNN, no card
            from amalgam.models.seed_format import load_seed_teacher, seed_teacher_card

            stats = spec.data.options
            model, model_input = load_seed_teacher(
                path, teacher.classes, spec.img_size, stats.get("mean"), stats.get("std")
            )
            card = seed_teacher_card(teacher.classes, model_input, spec.name)
        else:
            model, card = load_model(path, teacher.classes)
        models.append(model)
        inputs.append(model_input_for(card))
        cards.append(card)
    return models, inputs, cards


def load_ensemble(spec: TaskSpec, device: torch.device, root: Path = PROJECT_ROOT) -> TeacherEnsemble:
    models, inputs, _ = load_teachers(spec, root)
    return TeacherEnsemble(models, inputs, spec.roster()).to(device)
