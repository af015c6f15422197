"""A task's unlabeled images (`[data] unlabeled` in task.toml): a flat image folder or a `.pth`.

They join the training set only for label-free training (`--labels none`), so they must look
like the labeled training images: a folder is decoded at the training images' size and
channels, and a `.pth` must already hold images of that shape. A `.pth` may be a tensor or
array of images, or a dict with `data` (any `labels` in it are ignored, never read); it is
opened like every data file, without running pickled code.
"""

from __future__ import annotations

from pathlib import Path

import torch

from amalgam.errors import UserError
from amalgam.tasks.cas771 import images_to_nchw
from amalgam.tasks.folder import read_flat_folder
from amalgam.tasks.pth_files import load_pth_safely
from amalgam.tasks.spec import TaskSpec

PTH_SUFFIXES = (".pth", ".pt")


def read_unlabeled(spec: TaskSpec, shape: tuple[int, ...]) -> torch.Tensor | None:
    """uint8 [N, C, H, W] images with the training images' `shape` (C, H, W), or None when the
    task names no unlabeled images; every problem is one line naming the task and the key."""
    value = spec.data.options.get("unlabeled")
    if value is None:
        return None
    path = Path(value)
    where = f"task {spec.name!r}: [data] unlabeled = {str(path)!r}"
    if path.is_dir():
        images = read_flat_folder(path, (shape[1], shape[2]), shape[0])
    elif path.is_file() and path.suffix in PTH_SUFFIXES:
        images = _read_pth(path, where)
    elif path.exists():
        raise UserError(f"{where} is neither an image folder nor a .pth file; point it at one of them")
    else:
        raise UserError(f"{where} does not exist; fix the path (relative to the task file)")
    if tuple(images.shape[1:]) != tuple(shape):
        raise UserError(f"{where} holds images of shape {tuple(images.shape[1:])} (C, H, W) but the "
                        f"task's training images are {tuple(shape)}; save them at that size")
    return images


def _read_pth(path: Path, where: str) -> torch.Tensor:
    raw = load_pth_safely(path, "unlabeled data file")
    data = raw.get("data") if isinstance(raw, dict) else raw
    if data is None:
        found = sorted(map(str, raw)) if isinstance(raw, dict) else type(raw).__name__
        raise UserError(f"{where}: expected images, or a dict with 'data', found {found}")
    if not isinstance(data, torch.Tensor) and not hasattr(data, "__array__"):
        raise UserError(f"{where}: 'data' is a {type(data).__name__}, not an image array")
    images = images_to_nchw(data, path)
    if len(images) == 0:
        raise UserError(f"{where} holds no images; remove the key or add images")
    return images
