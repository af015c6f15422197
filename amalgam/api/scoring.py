"""`amalgam.evaluate`: `evaluation.py`'s scoring (harness/evaluate.py) on a Dataset in hand."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from amalgam.api.data import to_image_set
from amalgam.api.run import DistilResult
from amalgam.distill.engine.devices import resolve_device
from amalgam.errors import UserError
from amalgam.harness.evaluate import LoadedStudent, evaluate_student, load_any_student, score_student
from amalgam.models.model_input import ModelInput
from amalgam.tasks.loader import TaskData, channel_stats
from amalgam.tasks.spec import DataSpec, TaskSpec, TeacherSpec

SCORE_KEYS = ("accuracy", "macro_f1", "nll", "ece", "temperature", "nll_ts", "ece_ts")


def evaluate(
    student: DistilResult | nn.Module | str | Path,
    dataset: Any,
    classes: Sequence[str],
    out: str | Path | None = None,
    *,
    model_input: ModelInput | None = None,
    device: str = "auto",
) -> dict:
    """Accuracy, macro-F1, NLL and ECE (15 bins) of `student` on a labeled Dataset, as
    `evaluation.py` scores a test split; `temperature`, `nll_ts` and `ece_ts` are after a
    temperature fitted on this same dataset (there is no separate validation split here).

    `student`: a `distil` result, a run folder (its best epoch), a checkpoint stem, a file from
    `train.py export`, or a module mapping images to logits over `classes` (give its
    `model_input`; default: the dataset's size and statistics). With `out`, the usual report
    folder is written there too (results.json and the plots).
    """
    classes = tuple(classes)
    images = to_image_set(dataset, classes, "evaluation", True, "evaluation compares predictions with them")
    mean, std = channel_stats(images.images, 3)
    spec = TaskSpec("evaluation", classes, (TeacherSpec("all", classes),), DataSpec("in-memory"),
                    img_size=max(8, int(images.images.shape[-1])), source="python")
    data = TaskData(spec, images, images, images, mean, std)
    loaded = loaded_student(student, classes, data, model_input)
    torch_device = torch.device(resolve_device(device))
    if out is not None:
        results = evaluate_student(loaded, data, Path(out), torch_device)
        return {"accuracy": results["overall_accuracy"] / 100,
                **{k: results[k] for k in SCORE_KEYS[1:]}, "n_samples": results["n_samples"],
                "per_class_accuracy": {c: a / 100 for c, a in results["per_class_accuracy"].items()}}
    scores = score_student(loaded, data, torch_device)
    return {**{k: scores[k] for k in SCORE_KEYS}, "n_samples": len(images),
            "per_class_accuracy": dict(zip(classes, scores["per_class_accuracy"], strict=True))}


def loaded_student(
    student: Any, classes: tuple[str, ...], data: TaskData, model_input: ModelInput | None
) -> LoadedStudent:
    if isinstance(student, DistilResult):
        if tuple(student.classes) != classes:
            raise UserError(f"the student was trained on classes {list(student.classes)}, not "
                            f"{list(classes)}; pass its own classes")
        return LoadedStudent(student.student, student.model_input, student.run_dir / "best",
                             sum(p.numel() for p in student.student.parameters()))
    if isinstance(student, nn.Module):
        recipe = model_input or ModelInput(int(data.train.images.shape[-1]), data.mean, data.std)
        params = sum(p.numel() for p in student.parameters())
        return LoadedStudent(student.eval(), recipe, Path("in-memory"), params)
    path = Path(student)
    if path.is_dir() and (path / "best.json").is_file():
        path = path / "best"  # a run folder: its validation-chosen epoch
    return load_any_student(path, classes, "auto", data)
