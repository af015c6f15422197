"""Image-folder reader: one folder per split, one subfolder per class, any PIL-readable image.

Every image is decoded once, at load, and resized to the task's size, so a whole split lives
in one uint8 tensor and training never touches PIL again. Subfolders must be named after the
task's classes: a stray or misspelt folder is an error rather than a silently dropped class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

import amalgam
from amalgam.errors import UserError
from amalgam.tasks.images import ImageSet
from amalgam.tasks.spec import TaskSpec

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})
REQUIRED_SPLITS = ("train", "test")


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name != "__MACOSX"


def class_files(folder: Path, classes: tuple[str, ...], require_every_class: bool) -> list[tuple[Path, int]]:
    """(image file, class index) pairs in a stable order, checking folder names against the task."""
    if not folder.is_dir():
        raise UserError(f"image folder {folder} does not exist; fix the task's [data] paths or --data-dir")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and _visible(p))
    unknown = [name for name in found if name not in classes]
    if unknown:
        raise UserError(
            f"{folder} has subfolder(s) {unknown} that are not classes of the task; "
            f"name subfolders after the classes {list(classes)}"
        )
    pairs: list[tuple[Path, int]] = []
    for index, name in enumerate(classes):
        files = sorted(
            p for p in (folder / name).glob("*")
            if p.is_file() and _visible(p) and p.suffix.lower() in IMAGE_SUFFIXES
        ) if (folder / name).is_dir() else []
        if not files and require_every_class:
            raise UserError(f"{folder / name} holds no images; every class needs training images")
        pairs.extend((p, index) for p in files)
    if not pairs:
        raise UserError(f"{folder} holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return pairs


def decode(path: Path, size: int | tuple[int, int], channels: int) -> np.ndarray:
    """One image as uint8 H x W x C at the task's size (a square side, or (H, W))."""
    height, width = (size, size) if isinstance(size, int) else size
    try:
        with Image.open(path) as image:
            image = image.convert("RGB" if channels == 3 else "L")
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError,
            EOFError) as exc:
        raise UserError(f"cannot read image {path} ({exc}); delete or replace it") from exc
    return array[:, :, None] if array.ndim == 2 else array


def read_image_folder(folder: Path, classes: tuple[str, ...], size: int, channels: int,
                      require_every_class: bool = True) -> ImageSet:
    pairs = class_files(folder, classes, require_every_class)
    images = np.empty((len(pairs), size, size, channels), dtype=np.uint8)
    for i, (path, _) in enumerate(pairs):
        images[i] = decode(path, size, channels)
    labels = torch.tensor([label for _, label in pairs], dtype=torch.long)
    return ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels)


def read_flat_folder(folder: Path, size: tuple[int, int], channels: int) -> torch.Tensor:
    """uint8 [N, C, H, W]: every image directly in `folder` (unlabeled images: no class
    subfolders), decoded once and resized to `size` (H, W), in file-name order."""
    subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir() and _visible(p))
    if subfolders:
        raise UserError(f"unlabeled image folder {folder} has subfolder(s) {subfolders[:3]}; put the "
                        "unlabeled images directly in it (no class subfolders)")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and _visible(p) and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"unlabeled image folder {folder} holds no images "
                        f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    images = np.empty((len(files), *size, channels), dtype=np.uint8)
    for i, path in enumerate(files):
        images[i] = decode(path, size, channels)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def read_folder_task(spec: TaskSpec, data_dir: str | None) -> dict[str, ImageSet]:
    """train and test (and val, if the task names one) from their folders."""
    options = spec.data.options
    root = Path(data_dir or spec.data.root or ".").expanduser()
    if not root.is_absolute():
        root = amalgam.PROJECT_ROOT / root
    splits = {}
    for split in ("train", "test", "val"):
        relative = options.get(split)
        if relative is None:
            if split in REQUIRED_SPLITS:
                raise UserError(f"task {spec.name!r} names no {split} folder; "
                                f"add `{split} = \"…\"` to [data]")
            continue
        splits[split] = read_image_folder(root / relative, spec.classes, spec.img_size, spec.channels,
                                          require_every_class=split == "train")
    return splits
