"""Row arrays on disk: written block by block, read back memory-mapped a few rows at a time.

The teacher cache can be larger than RAM (a feature map of the reference app's CNN is 256 KiB per image, view
and teacher in 16 bits), so neither writing nor reading may hold it whole. Writing appends
blocks of rows to a temporary file that is renamed into place once complete. Reading maps
the file and copies only the rows a batch asks for; afterwards the mapping's pages are
dropped from the process (`MADV_DONTNEED`): they stay in the OS page cache, so the next read
is still fast, but they never count as the process's resident memory, which therefore does
not grow with the dataset.

Files are raw C-order rows with no header; the caller's index (JSON) records file, shape and
dtype, and a file whose size does not match is refused.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# storage dtype name → (numpy dtype on disk, torch dtype in memory); numpy has no bfloat16,
# so bf16 rows travel as int16 and are reinterpreted, bit for bit
STORAGE = {
    "float32": (np.float32, torch.float32),
    "float16": (np.float16, torch.float16),
    "bfloat16": (np.int16, torch.bfloat16),
}


@dataclass(frozen=True)
class ArrayFile:
    """Where a row array lives and what it holds (recorded in the cache's JSON index)."""

    file: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(STORAGE[self.dtype][0]).itemsize

    def to_dict(self) -> dict:
        return {"file": self.file, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: dict) -> ArrayFile:
        if data.get("dtype") not in STORAGE:
            raise ValueError(f"unknown storage dtype {data.get('dtype')!r}")
        return cls(str(data["file"]), tuple(int(x) for x in data["shape"]), str(data["dtype"]))


def _to_numpy(rows: torch.Tensor, dtype: str) -> np.ndarray:
    stored = rows.detach().to("cpu", STORAGE[dtype][1]).contiguous()
    return (stored.view(torch.int16) if dtype == "bfloat16" else stored).numpy()


class RowWriter:
    """Appends blocks of rows to a temporary file; `commit` renames it to `path` once all are in."""

    def __init__(self, path: Path, dtype: str):
        self.path, self.dtype = Path(path), dtype
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # a name of its own: two runs building the same entry at once never share a file
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self.tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb")
        self.row_shape: tuple[int, ...] | None = None
        self.rows = 0

    def append(self, rows: torch.Tensor) -> None:
        if self.row_shape is None:
            self.row_shape = tuple(rows.shape[1:])
        elif tuple(rows.shape[1:]) != self.row_shape:
            raise ValueError(f"rows of shape {list(rows.shape[1:])} after {list(self.row_shape)}")
        self._file.write(_to_numpy(rows, self.dtype).data)
        self.rows += rows.shape[0]

    def commit(self) -> ArrayFile:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp, self.path)
        return ArrayFile(self.path.name, (self.rows, *(self.row_shape or ())), self.dtype)

    def discard(self) -> None:
        try:
            if not self._file.closed:
                self._file.close()  # on a full disk, flushing the last block fails again
        except OSError:
            pass
        finally:
            self.tmp.unlink(missing_ok=True)


class MappedRows:
    """A row array read through a memory map; `rows(index)` copies just those rows."""

    def __init__(self, directory: Path, spec: ArrayFile):
        path = Path(directory) / spec.file
        size = path.stat().st_size
        if size != spec.nbytes:
            raise ValueError(f"{spec.file} holds {size} bytes, expected {spec.nbytes}")
        self.spec = spec
        np_dtype, self.torch_dtype = STORAGE[spec.dtype]
        with open(path, "rb") as fh:
            self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        buffer = self._map if self._map is not None else b""
        self._array = np.frombuffer(buffer, dtype=np_dtype).reshape(spec.shape)

    def __len__(self) -> int:
        return self.spec.shape[0]

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self.spec.shape[1:]

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """A fresh CPU tensor of the rows at `index` (in that order), in the stored dtype."""
        picked = np.take(self._array, index.cpu().numpy(), axis=0)  # a copy: only these rows are read
        self.release()
        tensor = torch.from_numpy(picked)
        return tensor.view(self.torch_dtype) if self.spec.dtype == "bfloat16" else tensor

    def release(self) -> None:
        """Drop the mapped pages from this process (not from the page cache): no RSS growth."""
        if self._map is not None and hasattr(self._map, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED)

    def resident_bytes(self) -> int:
        """Bytes of the mapping resident in this process (Linux, for tests); -1 if unknown."""
        if self._map is None:
            return 0
        start = np.frombuffer(self._map, dtype=np.uint8).ctypes.data
        try:
            lines = Path("/proc/self/smaps").read_text().splitlines()
        except OSError:
            return -1
        for i, line in enumerate(lines):
            if "-" in line.split(" ", 1)[0] and int(line.split("-", 1)[0], 16) == start:
                for detail in lines[i + 1:]:
                    if detail.startswith("Rss:"):
                        return int(detail.split()[1]) * 1024
        return -1
