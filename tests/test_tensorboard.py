"""`--log tensorboard`: every epoch's metrics and loss terms, read back with TensorBoard's reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.runs import metric_log
from amalgam.distill.runs.metric_log import check_metric_log, scalar_tags
from amalgam.distill.runs.run import DistilSettings, distil
from amalgam.errors import UserError

CE = DistilSettings(
    task="fashion-mini", student="mobilenetv3_small", method="ce", log="tensorboard",
    train=TrainConfig(epochs=2, batch_size=16, quiet=True, device="cpu"), img_size=32, train_per_class=4,
)


@pytest.mark.slow
def test_every_number_of_every_epoch_reaches_tensorboard(tmp_path: Path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = distil(CE, out_dir=tmp_path / "run", root=tmp_path)
    history = json.loads((run.run_dir / "history.json").read_text())
    events = EventAccumulator(str(run.run_dir))
    events.Reload()
    written = set(events.Tags()["scalars"])
    assert {"loss/train", "loss/val", "acc/train", "acc/val", "macro_f1/val", "lr"} <= written
    for row in history:
        expected = scalar_tags(row)
        assert set(expected) == written  # each loss term too: the row's every number, nothing else
        for tag, value in expected.items():
            (point,) = [e for e in events.Scalars(tag) if e.step == row["epoch"]]
            assert point.value == pytest.approx(value, rel=1e-6, abs=1e-7), tag  # stored as float32


def test_tags_put_train_and_val_of_one_quantity_together():
    row = {"epoch": 3, "train_loss": 2.0, "val_loss": 1.0, "val_macro_f1": 0.5, "lr": 0.1,
           "train_terms": {"loss_ce": 1.5, "loss_hint": 0.5}, "note": "text"}
    assert scalar_tags(row) == {"loss/train": 2.0, "loss/val": 1.0, "macro_f1/val": 0.5, "lr": 0.1,
                                "terms/train/loss_ce": 1.5, "terms/train/loss_hint": 0.5}


def test_without_the_extra_it_is_one_line_naming_the_install(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(metric_log.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError) as caught:
        distil(CE, out_dir=tmp_path / "run", root=tmp_path)
    assert "\n" not in str(caught.value) and "pip install 'amalgam[tensorboard]'" in str(caught.value)
    assert not (tmp_path / "run").exists()  # refused before any work
    with pytest.raises(UserError, match="--log must be one of"):
        check_metric_log("wandb")
    check_metric_log("none")  # needs nothing
