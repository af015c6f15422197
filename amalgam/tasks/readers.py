"""Readers turn a task's data spec into raw splits; one function per data kind, chosen by a dict."""

from __future__ import annotations

from collections.abc import Callable

from amalgam.errors import UserError, one_of
from amalgam.tasks.cas771 import read_cas771
from amalgam.tasks.fashion import locate_fashion_dir, read_fashion_mini, read_fashion_split
from amalgam.tasks.folder import read_folder_task
from amalgam.tasks.images import ImageSet
from amalgam.tasks.spec import TaskSpec

RawSplits = dict[str, ImageSet]  # "train", "test", optionally "val"; labels in task space
Reader = Callable[[TaskSpec, "str | None"], RawSplits]


def _fashion_idx(spec: TaskSpec, data_dir: str | None) -> RawSplits:
    folder = locate_fashion_dir(data_dir or spec.data.root)
    return {split: read_fashion_split(folder, split) for split in ("train", "test")}


def _fashion_mini(spec: TaskSpec, data_dir: str | None) -> RawSplits:
    return read_fashion_mini()


READERS: dict[str, Reader] = {
    "fashion-idx": _fashion_idx,
    "fashion-mini": _fashion_mini,
}


def register_reader(kind: str, reader: Reader) -> None:
    READERS[kind] = reader


register_reader("cas771-pth", read_cas771)
register_reader("folder", read_folder_task)


def read_raw_splits(spec: TaskSpec, data_dir: str | None) -> RawSplits:
    reader = READERS.get(spec.data.kind)
    if reader is None:
        raise UserError(
            f"task {spec.name!r} uses data kind {spec.data.kind!r}, which no reader knows; "
            f"use {one_of(sorted(READERS))}"
        )
    return reader(spec, data_dir)
