"""What each finished epoch leaves in the run folder, and reading the chosen weights back.

Every epoch writes last.{safetensors,json}, last_state.pt, history.json and learning_curve.png;
the best epoch so far (on validation accuracy) also writes best.{safetensors,json} and, for a
method with trained helpers (projectors, regressors), best_method.safetensors.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch.nn as nn
from safetensors.torch import load_file

from amalgam.distill.engine.trainer import Trainer
from amalgam.distill.runs.curves import learning_curve
from amalgam.distill.runs.folders import write_json
from amalgam.distill.runs.settings import DistilSettings
from amalgam.distill.runs.state import save_state
from amalgam.models.checkpoint import ModelCard, atomic_write_bytes, safetensors_writer, save_checkpoint
from amalgam.models.model_input import ModelInput
from amalgam.models.students import canonical_student, card_arch
from amalgam.tasks.loader import TaskData

BEST_METHOD_FILE = "best_method.safetensors"


def load_best(trainer: Trainer, run_dir: Path) -> None:
    """Put the validation-chosen weights (student and method helpers) back into the trainer."""
    trainer.student.load_state_dict(load_file(str(run_dir / "best.safetensors")))
    method_file = run_dir / BEST_METHOD_FILE
    if method_file.exists():
        trainer.method.load_state_dict(load_file(str(method_file)))


def student_card(
    settings: DistilSettings, data: TaskData, model_input: ModelInput, metrics: dict,
    student: nn.Module | None = None,
) -> ModelCard:
    name = settings.student
    arch = card_arch(name, student) if student is not None else canonical_student(name)
    return ModelCard(
        kind="student",
        arch=arch,
        classes=list(data.spec.classes),
        img_size=model_input.img_size,
        mean=list(model_input.mean),
        std=list(model_input.std),
        task=data.spec.name,
        metrics=metrics,
        trained_on={"task": data.spec.name, "method": settings.method, "images": len(data.train)},
    )


def save_epoch(
    trainer: Trainer, settings: DistilSettings, data: TaskData, model_input: ModelInput, run_dir: Path
) -> None:
    """Write last (always) and best (when this epoch is the best so far), then the log."""
    row = trainer.history[-1]
    weights = trainer.student.state_dict()
    metrics = {k: row[k] for k in ("epoch", "val_acc", "val_loss", "val_macro_f1")}
    card = student_card(settings, data, model_input, metrics, trainer.student)
    if trainer.best_epoch() is row:
        best_card = replace(card, metrics={**metrics, "selected_on": "val_acc"})
        save_checkpoint(run_dir / "best", weights, best_card)
        method_state = {k: v.detach().cpu().contiguous() for k, v in trainer.method.state_dict().items()}
        if method_state:  # projectors / regressors, needed to score SimKD's reused classifiers
            atomic_write_bytes(run_dir / BEST_METHOD_FILE, safetensors_writer(method_state))
    save_checkpoint(run_dir / "last", weights, card)
    save_state(trainer, run_dir)
    write_json(run_dir / "history.json", trainer.history)
    learning_curve(
        trainer.history,
        run_dir / "learning_curve.png",
        f"task {data.spec.name}: {settings.student}, {settings.method}",
    )
