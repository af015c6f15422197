"""Checkpoints: safetensors weights plus a JSON card, so loading never unpickles anything.

A checkpoint is named by its stem: `checkpoints/fashion-mini/teacher_1` stands for
`teacher_1.safetensors` (tensors only) and `teacher_1.json` (architecture, class names in
local order, preprocessing, metrics, provenance). Both are written atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from amalgam.errors import UserError

FORMAT = "amalgam-checkpoint/1"
SUFFIXES = (".safetensors", ".json")


@dataclass
class ModelCard:
    """Everything needed to rebuild and feed a model, stored beside its weights."""

    kind: str  # "teacher" | "student"
    arch: str
    classes: list[str]
    img_size: int
    mean: list[float]
    std: list[float]
    in_chans: int = 3
    task: str = ""
    metrics: dict = field(default_factory=dict)
    trained_on: dict = field(default_factory=dict)
    format: str = FORMAT

    @classmethod
    def from_dict(cls, data: dict, where: Path) -> ModelCard:
        known = {f for f in cls.__dataclass_fields__}
        missing = [k for k in ("kind", "arch", "classes", "img_size", "mean", "std") if k not in data]
        if missing:
            raise UserError(f"{where} lacks {missing}; it is not an amalgam checkpoint card")
        return cls(**{k: v for k, v in data.items() if k in known})


def checkpoint_stem(path: str | Path) -> Path:
    """Accept the stem or either file of a checkpoint and return the stem."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in SUFFIXES else path


def atomic_write_bytes(target: Path, write) -> None:
    """Write through a temporary file, fsync and rename, so a crash never leaves half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_checkpoint(stem: str | Path, state_dict: dict[str, torch.Tensor], card: ModelCard) -> Path:
    stem = checkpoint_stem(stem)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    weights, sidecar = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    atomic_write_bytes(weights, lambda p: save_file(tensors, str(p)))
    text = json.dumps(asdict(card), indent=2)
    atomic_write_bytes(sidecar, lambda p: p.write_text(text))
    return stem


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelCard]:
    stem = checkpoint_stem(path)
    weights, sidecar = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    for needed in (weights, sidecar):
        if not needed.exists():
            raise UserError(
                f"checkpoint file {needed} is missing; train it first "
                "(`python train.py teachers --task …`) or pass the right path"
            )
    try:
        card = ModelCard.from_dict(json.loads(sidecar.read_text()), sidecar)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise UserError(f"{sidecar} is corrupt ({exc}); retrain or restore it") from exc
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{weights} is corrupt ({exc}); retrain or restore it") from exc
    return state, card


def build_from_card(card: ModelCard) -> nn.Module:
    from amalgam.models.students import STUDENTS, create_student
    from amalgam.models.teachers import create_teacher

    if card.kind == "student" and card.arch in STUDENTS:
        return create_student(card.arch, len(card.classes))
    return create_teacher(card.arch, len(card.classes), card.in_chans)


def load_model(path: str | Path, expected_classes: list[str] | tuple[str, ...] | None = None):
    """Rebuild a model from its checkpoint and check its head matches the class list."""
    state, card = read_checkpoint(path)
    stem = checkpoint_stem(path)
    if expected_classes is not None and list(expected_classes) != list(card.classes):
        raise UserError(
            f"checkpoint {stem} was trained on classes {card.classes}, but the task expects "
            f"{list(expected_classes)}; fix the teacher's class list or retrain it"
        )
    model = build_from_card(card)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise UserError(
            f"weights in {stem}.safetensors do not fit a {card.arch} with {len(card.classes)} "
            f"classes ({first}); the card and the weights disagree, retrain it"
        ) from exc
    model.eval()
    return model, card
