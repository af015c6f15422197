"""Checkpoints: safetensors weights plus a JSON card, so loading never unpickles anything.

A checkpoint is named by its stem: `checkpoints/fashion-mini/teacher_1` stands for
`teacher_1.safetensors` (tensors only) and `teacher_1.json` (architecture, class names in
local order, preprocessing, metrics, provenance). Both are written atomically.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from amalgam.errors import UserError
from amalgam.models.registry import teacher_builder
from amalgam.models.students import STUDENTS, create_student
from amalgam.models.teacher_archs import create_teacher
from amalgam.tasks.architectures import CAS771_CNN, COMPACT_CNNS
from amalgam.tasks.pth_files import damaged_file

FORMAT = "amalgam-checkpoint/1"
SUFFIXES = (".safetensors", ".json")
RETRAIN = "retrain it or restore it from a copy"


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
    def from_dict(cls, data: Any, where: Path) -> ModelCard:
        """A card read from JSON; every field is checked, so a bad one fails here, by name."""
        if not isinstance(data, dict):
            raise UserError(f"{where} holds a JSON {type(data).__name__}, not a model card; "
                            "retrain the model or restore the card")
        missing = [k for k in ("kind", "arch", "classes", "img_size", "mean", "std") if k not in data]
        if missing:
            raise UserError(f"{where} lacks {missing}; it is not an amalgam checkpoint card")
        for name, valid, expected in CARD_FIELDS:
            if name in data and not valid(data[name], data):
                shown = repr(data[name])
                shown = shown if len(shown) <= 60 else shown[:57] + "..."
                raise UserError(f"{where}: field '{name}' must be {expected}, got {shown}; "
                                "fix the card or retrain the model")
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _known_arch(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    return value in STUDENTS or teacher_builder(value) is not None or timm.is_model(value)


def _class_names(value: Any) -> bool:
    names = isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value)
    return bool(names) and len(set(value)) == len(value)


def _per_channel(value: Any, card: dict, positive: bool) -> bool:
    lengths = {1, 3, card.get("in_chans", 3)}
    if not isinstance(value, list) or len(value) not in lengths:
        return False
    numbers = [v for v in value if isinstance(v, int | float) and not isinstance(v, bool)]
    finite = len(numbers) == len(value) and all(math.isfinite(v) for v in numbers)
    return finite and (not positive or all(v > 0 for v in numbers))


# (field, check(value, whole card), what it must be); in_chans before mean/std, which use it
CARD_FIELDS: tuple[tuple[str, Callable[[Any, dict], bool], str], ...] = (
    ("kind", lambda v, _: v in ("teacher", "student"), "'teacher' or 'student'"),
    ("arch", lambda v, _: _known_arch(v),
     f"a known architecture ({', '.join(sorted(COMPACT_CNNS))}, {CAS771_CNN}, a student or a timm model)"),
    ("classes", lambda v, _: _class_names(v), "a non-empty list of distinct class names"),
    ("img_size", lambda v, _: _whole(v, 1, 4096), "a whole number of pixels from 1 to 4096"),
    ("in_chans", lambda v, _: _whole(v, 1, 3) and v != 2, "1 or 3"),
    ("mean", lambda v, card: _per_channel(v, card, positive=False), "a list of 3 finite numbers"),
    ("std", lambda v, card: _per_channel(v, card, positive=True), "a list of 3 finite numbers above 0"),
    ("task", lambda v, _: isinstance(v, str), "a string"),
    ("metrics", lambda v, _: isinstance(v, dict), "an object"),
    ("trained_on", lambda v, _: isinstance(v, dict), "an object"),
    ("format", lambda v, _: v == FORMAT, f"{FORMAT!r} (this version's card format)"),
)


def checkpoint_stem(path: str | Path) -> Path:
    """Accept the stem or either file of a checkpoint and return the stem."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in SUFFIXES else path


def checkpoint_files(stem: str | Path) -> tuple[Path, Path]:
    """(weights, card) of a checkpoint stem; appended, not `with_suffix`, so `v1.2` stays `v1.2`."""
    stem = Path(stem)
    return stem.with_name(f"{stem.name}.safetensors"), stem.with_name(f"{stem.name}.json")


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (/proc), since setting
    it even briefly would race with any other thread creating a file."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(target: Path, write) -> None:
    """Write through a temporary file, fsync and rename, so a crash never leaves half a file.

    mkstemp makes the temporary file 0600 whatever the umask; it gets the mode any other file
    the user creates would have (0666 less the umask), so reports and checkpoints are as
    readable as the plots beside them. An OSError (a read-only or full disk) names `target`,
    not the temporary file, so the front end's one-line error points at the file the user knows.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(target)) from exc
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(target)) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def safetensors_writer(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    """A `write` for atomic_write_bytes: serialised in memory first, so that a full disk raises
    the OSError it is (safetensors' own file writer reports it as a SafetensorError)."""
    data = safetensors_bytes(tensors, metadata=metadata)
    return lambda path: path.write_bytes(data)


def torch_save_writer(obj: Any):
    """A `write` for atomic_write_bytes: torch.save into memory first, since torch.save into a
    file on a full disk fails as a RuntimeError ("unexpected pos") naming neither cause nor file."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    return lambda path: path.write_bytes(data)


def save_checkpoint(stem: str | Path, state_dict: dict[str, torch.Tensor], card: ModelCard) -> Path:
    stem = checkpoint_stem(stem)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    weights, sidecar = checkpoint_files(stem)
    atomic_write_bytes(weights, safetensors_writer(tensors))
    text = json.dumps(asdict(card), indent=2)
    atomic_write_bytes(sidecar, lambda p: p.write_text(text))
    return stem


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelCard]:
    stem = checkpoint_stem(path)
    weights, sidecar = checkpoint_files(stem)
    for needed in (weights, sidecar):
        if not needed.exists():
            raise UserError(
                f"checkpoint file {needed} is missing; train it first "
                "(`python train.py teachers --task …`) or pass the right path"
            )
    card = _read_card(sidecar)
    return _read_weights(weights), card


def read_card(path: str | Path) -> ModelCard:
    """A checkpoint's card alone (its classes, architecture, input), without reading the weights."""
    sidecar = checkpoint_files(checkpoint_stem(path))[1]
    if not sidecar.exists():
        raise UserError(f"model card {sidecar} is missing; pass a checkpoint stem with its .json card")
    return _read_card(sidecar)


def _read_card(sidecar: Path) -> ModelCard:
    try:
        text = sidecar.read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = "is empty" if sidecar.is_file() and not sidecar.stat().st_size else f"is corrupt ({exc})"
        raise UserError(f"model card {sidecar} {problem}; retrain the model or restore the card") from exc
    return ModelCard.from_dict(data, sidecar)


def _read_weights(weights: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise damaged_file(weights, "checkpoint file", str(exc), RETRAIN) from exc


def build_from_card(card: ModelCard) -> nn.Module:
    if card.kind == "student" and teacher_builder(card.arch) is None:  # an alias or any timm model
        return create_student(card.arch, len(card.classes), img_size=card.img_size)
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
