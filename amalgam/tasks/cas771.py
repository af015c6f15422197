"""Reader for the CAS771 `.pth` data files exactly as the course released them.

Each file is a `torch.save`d dict: `data` (uint8 images; numpy array or tensor; HWC or CHW),
`labels` (original CIFAR-100 / ImageNet labels; list, numpy or tensor) and sometimes
`indices`. They are pickles, so they are opened through `pth_files.load_pth_safely`:
anything but tensors and numpy arrays is refused before it runs.

Training uses every teacher's images (a class two teachers share gets both sets); the test
split counts each class once, from the first teacher in roster order whose file has it, as
the CAS771 reference app did, so our accuracies compare with its published ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

import amalgam
from amalgam.errors import UserError
from amalgam.tasks.images import ImageSet
from amalgam.tasks.pth_files import AGAIN, load_pth_safely
from amalgam.tasks.spec import TaskSpec

# The release-manifest assets (amalgam/harness/release_manifest.toml) of the CAS771 tasks:
# named in advice, so a user fetches the one that is missing rather than everything.
CAS771_DATA_ASSET = "cas771-data"
CAS771_MODELS_ASSET = "cas771-models"


def images_to_nchw(data: Any, path: Path) -> torch.Tensor:
    """uint8 [N, C, H, W] from an array or tensor stored as NHWC, NCHW or NHW."""
    try:
        images = data if isinstance(data, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(data))
    except (TypeError, ValueError) as exc:
        raise UserError(f"{path}: 'data' is not an image array ({exc})") from exc
    if images.dtype != torch.uint8:
        integral = not images.dtype.is_floating_point and images.dtype != torch.bool
        if not (integral and images.numel() and int(images.min()) >= 0 and int(images.max()) <= 255):
            raise UserError(f"{path}: 'data' has dtype {images.dtype}; expected uint8 images (0..255)")
        images = images.to(torch.uint8)
    if images.ndim == 3:
        return images.unsqueeze(1).contiguous()
    if images.ndim == 4 and images.shape[-1] in (1, 3):
        return images.permute(0, 3, 1, 2).contiguous()  # HWC, the released layout
    if images.ndim == 4 and images.shape[1] in (1, 3):
        return images.contiguous()
    raise UserError(
        f"{path}: 'data' has shape {tuple(images.shape)}; expected N x H x W x 3 or N x 3 x H x W"
    )


def labels_to_tensor(labels: Any, count: int, path: Path) -> torch.Tensor:
    try:
        values = labels if isinstance(labels, torch.Tensor) else torch.from_numpy(np.asarray(labels))
    except (TypeError, ValueError) as exc:
        raise UserError(f"{path}: 'labels' is not a list of integers ({exc})") from exc
    values = values.flatten()
    if count == 0 == len(values):  # an empty file: `[]` reads as float64, and that is fine
        return values.long()
    if values.dtype.is_floating_point or values.dtype == torch.bool or len(values) != count:
        raise UserError(
            f"{path}: 'labels' must hold one integer per image; got {len(values)} values of "
            f"{values.dtype} for {count} images"
        )
    return values.long()


def to_task_labels(original: torch.Tensor, spec: TaskSpec, path: Path) -> torch.Tensor:
    """Map labels through the task's table (name → original label); None means already global."""
    table = spec.data.options.get("original_labels")
    if table is None:
        bad = original[(original < 0) | (original >= spec.num_classes)]
        if len(bad):
            raise UserError(
                f"{path}: label {int(bad[0])} is not a class index of task {spec.name!r} "
                f"(0..{spec.num_classes - 1}); add an original_labels table to the task"
            )
        return original
    missing = [c for c in spec.classes if c not in table]
    if missing:
        raise UserError(f"task {spec.name!r}: original_labels has no entry for class(es) {missing}")
    by_global = torch.tensor([int(table[c]) for c in spec.classes], dtype=torch.long)
    order = by_global.argsort()
    known = by_global[order]
    position = torch.searchsorted(known, original).clamp(max=len(known) - 1)
    found = known[position] == original
    if not bool(found.all()):
        bad = int(original[~found][0])
        raise UserError(
            f"{path}: label {bad} is not in the class table of task {spec.name!r} "
            f"(known original labels: {known.tolist()}); is this the right file for the task?"
        )
    return order[position]


def _holds_no_images(data: Any) -> bool:
    if isinstance(data, torch.Tensor):
        return data.numel() == 0
    if isinstance(data, np.ndarray):
        return data.size == 0
    return isinstance(data, list | tuple) and len(data) == 0


def _no_images() -> ImageSet:
    return ImageSet(torch.empty((0, 3, 0, 0), dtype=torch.uint8), torch.empty(0, dtype=torch.long))


def read_pth_split(path: Path, spec: TaskSpec) -> ImageSet:
    """One released file as an ImageSet with labels in task space (empty if the file holds none)."""
    fix = AGAIN
    if spec.source == "built-in":
        fix = f"download it again (`python evaluation.py fetch {CAS771_DATA_ASSET}`)"
    raw = load_pth_safely(path, "data file", fix)
    if not isinstance(raw, dict) or "data" not in raw or "labels" not in raw:
        keys = sorted(map(str, raw)) if isinstance(raw, dict) else type(raw).__name__
        raise UserError(f"{path}: expected a dict with 'data' and 'labels', found {keys}")
    if _holds_no_images(raw["data"]):
        labels_to_tensor(raw["labels"], 0, path)
        return _no_images()
    images = images_to_nchw(raw["data"], path)
    labels = labels_to_tensor(raw["labels"], len(images), path)
    return ImageSet(images, to_task_labels(labels, spec, path))


def data_folder(spec: TaskSpec, data_dir: str | None, probe: str) -> Path:
    """The folder the task's relative file names start from.

    `--data-dir` may name that folder itself, the project folder that holds `data/TaskB/…`,
    or the folder that holds `TaskB/…`; the first one where `probe` exists wins.
    """
    root = Path(spec.data.root or ".").expanduser()
    if data_dir is None:
        return root if root.is_absolute() else amalgam.PROJECT_ROOT / root
    base = Path(data_dir).expanduser()
    candidates = [base] if root.is_absolute() else [base, base / root, base / root.name]
    return next((c for c in candidates if (c / probe).is_file()), base)


def _missing(spec: TaskSpec, path: Path, data_dir: str | None) -> UserError:
    if spec.source == "built-in":
        where = f"--data-dir {data_dir}" if data_dir else str(amalgam.PROJECT_ROOT)
        return UserError(
            f"CAS771 data file {path} is missing; run `python evaluation.py fetch {CAS771_DATA_ASSET}` "
            f"(or unpack the data archive's data/ folder into {where})"
        )
    return UserError(f"data file {path} of task {spec.name!r} ({spec.source}) is missing; "
                     "fix its [data] paths or pass --data-dir")


def _same_size(parts: list[tuple[Path, ImageSet]]) -> None:
    parts = [(path, part) for path, part in parts if len(part)]
    if not parts:
        return
    first_path, first = parts[0]
    for path, part in parts[1:]:
        if part.images.shape[1:] != first.images.shape[1:]:
            raise UserError(
                f"{path} holds images of shape {tuple(part.images.shape[1:])} but {first_path} "
                f"holds {tuple(first.images.shape[1:])}; all files of a task need one image size"
            )


def read_cas771(spec: TaskSpec, data_dir: str | None) -> dict[str, ImageSet]:
    """Train = all teachers' train files; test = each class once, from its first teacher's file."""
    files = spec.data.options.get("files") or []
    if len(files) != len(spec.teachers):
        raise UserError(
            f"task {spec.name!r} lists {len(files)} data file pairs for {len(spec.teachers)} "
            "teachers; give each teacher a train and a test file"
        )
    folder = data_folder(spec, data_dir, files[0]["train"])
    loaded: dict[str, list[tuple[Path, ImageSet]]] = {"train": [], "test": []}
    for entry in files:
        for split in ("train", "test"):
            path = folder / entry[split]
            if not path.is_file():
                raise _missing(spec, path, data_dir)
            loaded[split].append((path, read_pth_split(path, spec)))
    _same_size(loaded["train"] + loaded["test"])
    _check_every_class_trains(spec, loaded["train"])
    test_parts, seen = [], torch.zeros(spec.num_classes, dtype=torch.bool)
    for _, part in loaded["test"]:
        test_parts.append(part.subset(torch.nonzero(~seen[part.labels]).flatten()))
        seen[part.labels] = True
    return {"train": _joined([part for _, part in loaded["train"]]), "test": _joined(test_parts)}


def _joined(parts: list[ImageSet]) -> ImageSet:
    with_images = [part for part in parts if len(part)]
    return ImageSet.concat(with_images) if with_images else _no_images()


def _check_every_class_trains(spec: TaskSpec, train: list[tuple[Path, ImageSet]]) -> None:
    """A class that no training file holds would silently get no images: name it and its files."""
    counts = sum(torch.bincount(part.labels, minlength=spec.num_classes) for _, part in train)
    missing = [name for name, count in zip(spec.classes, counts.tolist(), strict=True) if count == 0]
    if not missing:
        return
    expected = [(path, part) for teacher, (path, part) in zip(spec.teachers, train, strict=True)
                if set(missing) & set(teacher.classes)]
    where = "; ".join(f"{path} ({'holds no images' if not len(part) else 'has none of them'})"
                      for path, part in expected)
    raise UserError(f"class(es) {missing} of task {spec.name!r} have no training images; expected in "
                    f"{where} - replace the file(s) or drop the class(es) from the task")
