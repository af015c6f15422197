"""Fashion-MNIST readers: the official IDX files, and the small subset committed in the repo."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

from amalgam.errors import UserError
from amalgam.tasks.images import ImageSet

FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
MINI_FILE = Path(__file__).parent / "data" / "fashion_mini" / "fashion_mini.npz"
MINI_TRAIN_PER_CLASS = 300  # fashion-mini's training images: the first 300 of each class, file order
HELD_OUT_PER_CLASS = 1000  # `held_out_from_mini`: the next 1,000 of each class
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (optionally gzipped): magic, dims, then raw uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        return data.reshape(dims)
    except (OSError, ValueError, struct.error, EOFError) as exc:
        raise UserError(
            f"{path} is not a readable IDX file ({exc}); reinstall it with "
            "`apt-get install --reinstall dataset-fashion-mnist`"
        ) from exc


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).exists():
            return folder / name
    return None


def locate_fashion_dir(data_dir: str | None) -> Path:
    """The first folder holding the IDX files: --data-dir, the Debian package, then a download."""
    candidates = [Path(data_dir)] if data_dir else [SYSTEM_DIR]  # an explicit folder is never second-guessed
    for folder in candidates:
        if all(_find_idx(folder, s) for pair in IDX_FILES.values() for s in pair):
            return folder
    if data_dir:
        raise UserError(
            f"no Fashion-MNIST IDX files in {data_dir}; point --data-dir at the folder holding "
            "train-images-idx3-ubyte.gz, or `apt-get install -y dataset-fashion-mnist`"
        )
    return _download_with_torchvision()


def _download_with_torchvision() -> Path:
    target = Path(os.environ.get("AMALGAM_DATA", "data")) / "fashion-mnist"
    try:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(target), train=True, download=True)
        FashionMNIST(str(target), train=False, download=True)
    except Exception as exc:  # any network or mirror failure means the same thing here
        raise UserError(
            "Fashion-MNIST not found and could not be downloaded "
            f"({type(exc).__name__}); install it with `apt-get install -y dataset-fashion-mnist` "
            "or pass --data-dir"
        ) from exc
    return target / "FashionMNIST" / "raw"


def read_fashion_split(folder: Path, split: str) -> ImageSet:
    images_stem, labels_stem = IDX_FILES[split]
    images = read_idx(_find_idx(folder, images_stem))
    labels = read_idx(_find_idx(folder, labels_stem))
    if images.ndim != 3 or len(images) != len(labels):
        raise UserError(f"Fashion-MNIST {split} files in {folder} disagree in length; reinstall")
    return ImageSet(
        torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
    )


def read_fashion_mini() -> dict[str, ImageSet]:
    """The committed subset (see data/fashion_mini/README.md for how it was made)."""
    if not MINI_FILE.exists():
        raise UserError(f"{MINI_FILE} is missing; restore it with `git checkout -- {MINI_FILE}`")
    with np.load(MINI_FILE) as npz:
        return {
            split: ImageSet(
                torch.from_numpy(npz[f"{split}_images"]).unsqueeze(1),
                torch.from_numpy(npz[f"{split}_labels"].astype(np.int64)),
            )
            for split in ("train", "test")
        }


def held_out_from_mini(folder: Path = SYSTEM_DIR, per_class: int = HELD_OUT_PER_CLASS) -> ImageSet:
    """`per_class` training images of each class that follow fashion-mini's (file order): a
    validation set many times the size of fashion-mini's own, for benchmarks that choose a
    recipe on fashion-mini tasks without reading a test image (scripts/full_test_scores.py)."""
    return _per_class_block(read_fashion_split(folder, "train"), MINI_TRAIN_PER_CLASS, per_class)


SCORING_SPLITS = ("test", "held-out")


def scoring_images(split: str) -> ImageSet:
    """10,000 images to score fashion-mini runs and teachers on: Fashion-MNIST's whole test split
    (`test`, for reporting) or `held_out_from_mini` (`held-out`, for choosing)."""
    return read_fashion_split(locate_fashion_dir(None), "test") if split == "test" else held_out_from_mini()


def beyond_held_out(folder: Path, per_class: int) -> ImageSet:
    """`per_class` training images of each class after fashion-mini's and `held_out_from_mini`'s
    (file order): more data for teachers (teacher recipe `more-data`), none of it an image the
    student trains, validates or is scored on."""
    split = read_fashion_split(folder, "train")
    block = _per_class_block(split, MINI_TRAIN_PER_CLASS + HELD_OUT_PER_CLASS, per_class)
    if len(block) < per_class * len(FASHION_CLASSES):
        raise UserError(f"Fashion-MNIST's training split has fewer than {per_class} images per class "
                        f"beyond fashion-mini's and the held-out ones; ask for fewer")
    return block


def _per_class_block(split: ImageSet, start: int, per_class: int) -> ImageSet:
    """Images start..start+per_class of each class, file order, kept in file order."""
    keep = torch.cat([torch.nonzero(split.labels == c).flatten()[start:start + per_class]
                      for c in range(len(FASHION_CLASSES))]).sort().values
    return ImageSet(split.images[keep], split.labels[keep])
