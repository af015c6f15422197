"""A stopped run, resumed, ends exactly where an uninterrupted run of the same seed ends.

Bit-exact is the product's promise here, and a fair one: both runs are in this process, on
the same machine, build and thread count, and the resumed epoch sees the same weights,
optimiser state, batches, augmentation draws and RNG state, so every kernel gets the same
inputs in the same shapes. Across machines or thread counts nothing is promised beyond rounding.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.methods import MethodOptions
from amalgam.distill.runs.run import DistilSettings, distil, resume


def settings(epochs: int, method: str = "kd", **options) -> DistilSettings:
    return DistilSettings(
        task="fashion-mini", student="mobilenetv3_small", method=method,
        method_options=MethodOptions(temperature=3.0, alpha=0.5, **options),
        train=TrainConfig(epochs=epochs, batch_size=32, seed=7, augment="crop-flip", quiet=True,
                          scheduler="step", scheduler_step=1, scheduler_gamma=0.5),
        img_size=32, train_per_class=10,
    )


def without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


# the second: the per-class trust learnt in epoch 1 carries over
PER_CLASS_TRUST = {"method": "uhc-ka", "teacher_trust": "per-class"}


@pytest.mark.parametrize("variant", [{}, PER_CLASS_TRUST])
def test_resume_matches_an_uninterrupted_run(trained_home: Path, tmp_path: Path, variant: dict):
    straight = distil(settings(2, **variant), out_dir=tmp_path / "straight", root=trained_home)
    stopped = distil(settings(1, **variant), out_dir=tmp_path / "stopped", root=trained_home)
    assert len(stopped.history) == 1
    resumed = resume(stopped.run_dir, epochs=2, root=trained_home)
    assert without_time(resumed.history) == without_time(straight.history)
    for name in ("last", "best"):
        a = load_file(str(straight.run_dir / f"{name}.safetensors"))
        b = load_file(str(resumed.run_dir / f"{name}.safetensors"))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    saved = json.loads((resumed.run_dir / "history.json").read_text())
    assert [row["epoch"] for row in saved] == [1, 2]
    config = json.loads((resumed.run_dir / "config.json").read_text())
    assert config["train"]["epochs"] == 2


def test_resume_of_a_finished_run_trains_nothing(trained_home: Path, tmp_path: Path):
    done = distil(replace(settings(1), method="ce"), out_dir=tmp_path / "done", root=trained_home)
    before = (done.run_dir / "last.safetensors").read_bytes()
    again = resume(done.run_dir, root=trained_home)
    assert len(again.history) == 1
    assert (done.run_dir / "last.safetensors").read_bytes() == before


def test_the_trust_a_resumed_run_goes_on_with_is_the_one_it_saved(trained_home: Path, tmp_path: Path):
    """The per-class trust after epoch 1 is below one somewhere (else the resume above could not
    tell a lost trust from a kept one), and the resumed run starts epoch 2 with it."""
    stopped = distil(settings(1, **PER_CLASS_TRUST), out_dir=tmp_path / "stopped", root=trained_home)
    saved = torch.load(stopped.run_dir / "last_state.pt", weights_only=False)["method"]["class_trust.trust"]
    assert (saved < 1).any()
