"""Reports, checkpoints and plots all get the mode the user's umask gives any new file
(mkstemp alone would leave the atomically written ones at 0600)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch

from amalgam.distill.runs.curves import save_figure
from amalgam.distill.runs.folders import write_json
from amalgam.models.checkpoint import (
    ModelCard,
    atomic_write_bytes,
    checkpoint_files,
    current_umask,
    save_checkpoint,
)


@contextmanager
def umask(mask: int) -> Iterator[None]:
    before = os.umask(mask)
    try:
        yield
    finally:
        os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o027, 0o002])
def test_every_kind_of_file_follows_the_umask(tmp_path: Path, mask: int):
    card = ModelCard(kind="teacher", arch="cnn-small", classes=["a", "b"], img_size=8,
                     mean=[0.5] * 3, std=[0.25] * 3)
    with umask(mask):
        assert current_umask() == mask
        atomic_write_bytes(tmp_path / "results.json", lambda p: p.write_text("{}"))
        write_json(tmp_path / "history.json", [{"epoch": 1}])
        stem = save_checkpoint(tmp_path / "best", {"w": torch.zeros(2)}, card)
        atomic_write_bytes(tmp_path / "state.pt", lambda p: torch.save({"x": 1}, p))
        fig, _ = plt.subplots()
        save_figure(fig, tmp_path / "learning_curve.png")
        plain = tmp_path / "plain.txt"
        plain.write_text("made the ordinary way")  # what the umask gives any new file
    written = [tmp_path / "results.json", tmp_path / "history.json", *checkpoint_files(stem),
               tmp_path / "state.pt", tmp_path / "learning_curve.png"]
    assert {p.name: mode(p) for p in written} == {p.name: mode(plain) for p in written}
    assert mode(plain) == 0o666 & ~mask
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
