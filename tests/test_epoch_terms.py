"""Every epoch records each loss term and the one quantity train and validation share (plain
CE), in history and on the epoch line, so a weighted training loss is never set beside
validation's CE as if they were alike."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from amalgam.distill.engine.loss_log import add_measures, epoch_line, epoch_measures
from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.engine.trainer import Trainer
from amalgam.distill.methods import MethodOptions
from amalgam.distill.methods.base import Method
from amalgam.models.model_input import ModelInput
from amalgam.tasks.images import ImageSet
from tests.helpers.small_models import TinyStudent, roster3


class WeightedTerms(Method):
    """Like FitNet's shape: a down-weighted CE and a heavy second term."""

    name = "weighted-terms"
    uses_teachers = False

    def loss_terms(self, student_logits, student_features, teacher, labels):
        return {"loss_ce": 0.5 * F.cross_entropy(student_logits, labels),
                "loss_extra": 10.0 * student_logits.pow(2).mean()}


def test_history_row_holds_each_term_and_train_ce_beside_val_ce():
    _, roster = roster3()
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (20, 3, 16, 16), dtype=torch.uint8, generator=generator)
    train = ImageSet(images, torch.arange(20) % 5)
    torch.manual_seed(0)
    trainer = Trainer(TinyStudent(5), WeightedTerms(roster, MethodOptions()),
                      ModelInput(16, (0.5,) * 3, (0.25,) * 3), train, train, 5,
                      TrainConfig(epochs=1, batch_size=6, quiet=True, augment="none"))

    row = trainer.train_epoch()

    assert list(row["train_terms"]) == ["loss_ce", "loss_extra"]
    assert sum(row["train_terms"].values()) == pytest.approx(row["train_loss"], rel=1e-5)
    # train_ce is the unweighted CE: twice the method's 0.5-weighted term, batch by batch
    assert row["train_ce"] == pytest.approx(2 * row["train_terms"]["loss_ce"], rel=1e-5)
    assert row["val_ce"] == row["val_loss"]
    line = epoch_line(row, 1)
    assert f"train loss {row['train_loss']:.4f} = loss_ce {row['train_terms']['loss_ce']:.4f} + " in line
    assert f"loss_extra {row['train_terms']['loss_extra']:.4f}" in line
    assert f"CE train {row['train_ce']:.4f} val {row['val_ce']:.4f}" in line


def test_sums_are_per_image_means_and_survive_a_resume_from_an_older_state():
    sums = add_measures(None, {"loss_ce": 1.0, "train_ce": 2.0}, 4)
    sums = add_measures(sums, {"loss_ce": 3.0, "train_ce": 4.0}, 2)
    assert epoch_measures(sums) == {"train_terms": {"loss_ce": pytest.approx(5 / 3)},
                                    "train_ce": pytest.approx(8 / 3)}
    # a state saved before terms were logged resumes with none: the line falls back to val loss
    assert epoch_measures(None) == {"train_terms": {}, "train_ce": None}
    row = {"epoch": 2, "train_loss": 1.5, "train_acc": 0.5, "val_loss": 0.7, "val_acc": 0.6,
           "val_macro_f1": 0.5, "seconds": 1.0, **epoch_measures(None)}
    assert "| val loss 0.7000 |" in epoch_line(row, 3) and "CE train" not in epoch_line(row, 3)
