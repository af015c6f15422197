"""Rebuild the committed fashion-mini subset from the official Fashion-MNIST IDX files.

Usage: python scripts/make_fashion_mini.py [IDX_DIR]
Takes the first images of each class in file order (no randomness), so the output is
byte-for-byte reproducible from the same IDX files.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from amalgam.tasks.fashion import MINI_FILE, SYSTEM_DIR, read_fashion_split

PER_CLASS = {"train": 300, "test": 60}


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)]))


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else SYSTEM_DIR
    arrays = {}
    for split, per_class in PER_CLASS.items():
        data = read_fashion_split(folder, split)
        labels = data.labels.numpy()
        keep = first_per_class(labels, per_class)
        arrays[f"{split}_images"] = data.images[keep, 0].numpy()
        arrays[f"{split}_labels"] = labels[keep].astype(np.uint8)
    MINI_FILE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(MINI_FILE, **arrays)
    digest = hashlib.sha256(MINI_FILE.read_bytes()).hexdigest()
    print(f"wrote {MINI_FILE} ({MINI_FILE.stat().st_size} bytes, sha256 {digest})")


if __name__ == "__main__":
    main()
