"""The `fashion` task reads the official IDX format; generated here, tiny, no download."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from amalgam.errors import UserError
from amalgam.tasks.builtin import get_task
from amalgam.tasks.fashion import read_idx
from amalgam.tasks.loader import load_task_data


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def make_fashion_dir(folder: Path, per_class: dict[str, int]) -> None:
    rng = np.random.default_rng(0)
    names = {
        "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    }
    for split, (images_name, labels_name) in names.items():
        labels = np.repeat(np.arange(10), per_class[split])
        write_idx(folder / images_name, rng.integers(0, 256, (len(labels), 28, 28)))
        write_idx(folder / labels_name, labels)


def test_fashion_task_reads_idx_files(tmp_path: Path):
    make_fashion_dir(tmp_path, {"train": 10, "test": 3})
    data = load_task_data(get_task("fashion"), data_dir=str(tmp_path))
    assert (len(data.train), len(data.val), len(data.test)) == (90, 10, 30)
    assert data.train.images.shape[1:] == (1, 28, 28) and data.train.images.dtype == torch.uint8
    raw = read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz")
    assert torch.equal(data.test.labels, torch.from_numpy(raw.astype(np.int64)))


def test_missing_idx_files_name_the_fix(tmp_path: Path):
    with pytest.raises(UserError, match="apt-get install -y dataset-fashion-mnist"):
        load_task_data(get_task("fashion"), data_dir=str(tmp_path))


def test_corrupt_idx_file(tmp_path: Path):
    make_fashion_dir(tmp_path, {"train": 2, "test": 1})
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a readable IDX file"):
        load_task_data(get_task("fashion"), data_dir=str(tmp_path))
