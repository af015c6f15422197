"""Which weights a run keeps: `best` is the epoch chosen on validation, `last` the final one,
and a loss that turns non-finite leaves both at the last good epoch.

Real `distil()` runs of 3 epochs on a tiny slice of the embedded task (method `ce`, so no
teachers are needed). Validation accuracy is scripted per epoch so that which epoch is best
never depends on this machine's rounding; the weights each epoch ends with are snapshotted
where the run saves them and compared with the files bit for bit (a file holds the very
tensors that were saved, so equality is exact on any CPU).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import amalgam.distill.engine.trainer as trainer_module
import amalgam.distill.runs.run as run_module
from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.engine.trainer import NonFiniteLoss, Trainer
from amalgam.distill.methods import METHODS, MethodOptions
from amalgam.distill.runs import saving as run_saving
from amalgam.distill.runs.run import DistilSettings, distil
from amalgam.distill.runs.saving import load_best


def settings() -> DistilSettings:
    return DistilSettings(
        task="fashion-mini", student="mobilenetv3_small", method="ce",
        method_options=MethodOptions(),
        train=TrainConfig(epochs=3, batch_size=16, lr=1e-3, seed=5, augment="none", quiet=True,
                          scheduler="step", scheduler_step=10),
        img_size=32, train_per_class=4,  # 36 training images: 3 steps of 16 (a 4th of 4)
    )


@pytest.fixture
def epochs_seen(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, torch.Tensor]]:
    """The student's weights at the end of each epoch, taken as the run saves that epoch."""
    snapshots: list[dict[str, torch.Tensor]] = []
    save_epoch = run_module.save_epoch

    def snapshot_then_save(trainer, *args, **kwargs):
        snapshots.append({k: v.detach().clone() for k, v in trainer.student.state_dict().items()})
        return save_epoch(trainer, *args, **kwargs)

    monkeypatch.setattr(run_module, "save_epoch", snapshot_then_save)
    monkeypatch.setattr(run_saving, "learning_curve", lambda *args, **kwargs: None)  # half the time
    return snapshots


def script_val_accuracy(monkeypatch: pytest.MonkeyPatch, by_epoch: dict[int, float]) -> None:
    """Real validation, with its accuracy replaced by the scripted one for that epoch."""
    validate = Trainer.validate

    def scripted(self: Trainer) -> dict:
        scores = validate(self)
        return {**scores, "accuracy": by_epoch[self.epoch + 1]}  # self.epoch counts finished epochs

    monkeypatch.setattr(Trainer, "validate", scripted)


def weights_in(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_same_weights(saved: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], name: str) -> None:
    assert saved.keys() == expected.keys(), name
    different = [k for k in saved if not torch.equal(saved[k], expected[k])]
    assert not different, f"{name}: {different[:3]}"


def differ(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def test_best_is_the_validation_chosen_epoch_and_last_the_final_one(monkeypatch, epochs_seen, tmp_path):
    script_val_accuracy(monkeypatch, {1: 0.30, 2: 0.70, 3: 0.50})
    result = distil(settings(), out_dir=tmp_path / "run", root=tmp_path)
    run_dir = result.run_dir
    assert len(epochs_seen) == 3 and differ(epochs_seen[1], epochs_seen[2])  # epoch 3 did train

    assert_same_weights(weights_in(run_dir / "best.safetensors"), epochs_seen[1], "best")
    assert_same_weights(weights_in(run_dir / "last.safetensors"), epochs_seen[2], "last")
    best_card = json.loads((run_dir / "best.json").read_text())
    last_card = json.loads((run_dir / "last.json").read_text())
    assert best_card["metrics"]["epoch"] == 2 and best_card["metrics"]["selected_on"] == "val_acc"
    assert best_card["metrics"]["val_acc"] == 0.70 and last_card["metrics"]["epoch"] == 3
    history = json.loads((run_dir / "history.json").read_text())
    assert [row["val_acc"] for row in history] == [0.30, 0.70, 0.50]
    assert result.best["epoch"] == 2

    load_best(result.trainer, run_dir)  # what `compare` scores: the epoch-2 weights again
    assert_same_weights(result.trainer.student.state_dict(), epochs_seen[1], "load_best")


def test_ties_on_accuracy_go_to_the_lower_validation_loss(monkeypatch, epochs_seen, tmp_path):
    """Epochs 1 and 3 tie on accuracy; the one with the lower validation loss is kept."""
    script_val_accuracy(monkeypatch, {1: 0.60, 2: 0.20, 3: 0.60})
    result = distil(settings(), out_dir=tmp_path / "run", root=tmp_path)
    losses = [row["val_loss"] for row in result.history]
    assert losses[0] != losses[2]
    chosen = 1 if losses[0] < losses[2] else 3
    assert result.best["epoch"] == chosen
    assert_same_weights(weights_in(result.run_dir / "best.safetensors"), epochs_seen[chosen - 1], "best")


class NaNOnThirdEpoch(METHODS["ce"]):
    """`ce` whose loss turns NaN from the second step of epoch 3 on, after one good step."""

    finished_epochs: list = []
    steps_in_epoch_3 = 0

    def loss_terms(self, student_logits, student_features, teacher, labels):
        terms = super().loss_terms(student_logits, student_features, teacher, labels)
        if len(self.finished_epochs) == 2:
            type(self).steps_in_epoch_3 += 1
            if type(self).steps_in_epoch_3 >= 2:
                return {**terms, "loss_ce": terms["loss_ce"] * math.nan}
        return terms


def test_non_finite_loss_in_epoch_3_keeps_the_last_good_epoch(monkeypatch, epochs_seen, tmp_path):
    script_val_accuracy(monkeypatch, {1: 0.60, 2: 0.40, 3: 0.90})  # best = 1, last good = 2
    NaNOnThirdEpoch.finished_epochs = epochs_seen
    NaNOnThirdEpoch.steps_in_epoch_3 = 0
    monkeypatch.setitem(METHODS, "ce", NaNOnThirdEpoch)
    run_dir = tmp_path / "run"

    with pytest.raises(NonFiniteLoss) as caught:
        distil(settings(), out_dir=run_dir, root=tmp_path)

    message = str(caught.value)
    assert "epoch 3 step 1" in message and "loss_ce=nan" in message
    assert f"last good checkpoint: {run_dir / 'last'} (epoch 2)" in message
    assert len(epochs_seen) == 2 and NaNOnThirdEpoch.steps_in_epoch_3 == 2  # one good step of epoch 3 ran
    assert_same_weights(weights_in(run_dir / "best.safetensors"), epochs_seen[0], "best")
    assert_same_weights(weights_in(run_dir / "last.safetensors"), epochs_seen[1], "last")
    assert json.loads((run_dir / "last.json").read_text())["metrics"]["epoch"] == 2
    assert [row["epoch"] for row in json.loads((run_dir / "history.json").read_text())] == [1, 2]
    state = torch.load(run_dir / "last_state.pt", weights_only=True)
    assert state["epoch"] == 2 and state["progress"] is None  # resumes at the start of epoch 3


class PoisonedLastStepOfEpoch3(METHODS["ce"]):
    """`ce` whose loss stays finite but whose gradient is NaN on the last step of epoch 3:
    sqrt(|u|) at u = 0 has an infinite slope, and 0 * inf is NaN. Only the weights show it."""

    finished_epochs: list = []
    calls: list = []

    def loss_terms(self, student_logits, student_features, teacher, labels):
        terms = super().loss_terms(student_logits, student_features, teacher, labels)
        epoch = len(self.finished_epochs) + 1
        self.calls.append(epoch)
        steps_per_epoch = self.calls.count(1)
        if epoch == 3 and self.calls.count(3) == steps_per_epoch:
            flat = (student_logits - student_logits.detach()).abs().sqrt().sum()
            return {**terms, "loss_poison": 0.0 * flat}  # value 0, gradient NaN
        return terms


def test_weights_that_diverge_on_the_last_step_never_reach_the_files(monkeypatch, epochs_seen, tmp_path):
    """No non-finite loss to see, yet the step leaves NaN weights: the run must stop before
    validation scores them (NaN logits still give an accuracy) and before anything is saved."""
    script_val_accuracy(monkeypatch, {1: 0.60, 2: 0.40, 3: 0.90})
    PoisonedLastStepOfEpoch3.finished_epochs = epochs_seen
    PoisonedLastStepOfEpoch3.calls = []
    monkeypatch.setitem(METHODS, "ce", PoisonedLastStepOfEpoch3)
    run_dir = tmp_path / "run"

    with pytest.raises(NonFiniteLoss) as caught:
        distil(settings(), out_dir=run_dir, root=tmp_path)

    steps_per_epoch = PoisonedLastStepOfEpoch3.calls.count(1)
    assert PoisonedLastStepOfEpoch3.calls.count(3) == steps_per_epoch  # the poisoned step ran
    assert f"gradients became non-finite at epoch 3 step {steps_per_epoch - 1}" in str(caught.value)
    assert f"last good checkpoint: {run_dir / 'last'} (epoch 2)" in str(caught.value)
    assert_same_weights(weights_in(run_dir / "best.safetensors"), epochs_seen[0], "best")
    assert_same_weights(weights_in(run_dir / "last.safetensors"), epochs_seen[1], "last")
    state = torch.load(run_dir / "last_state.pt", weights_only=True)
    assert state["epoch"] == 2 and all(torch.isfinite(v).all() for v in state["student"].values()
                                       if v.is_floating_point())


def test_non_finite_validation_logits_stop_the_run_before_saving(monkeypatch, epochs_seen, tmp_path):
    """Weights can diverge in ways no gradient shows (BatchNorm statistics); NaN logits would
    still score an accuracy (argmax of NaN is 0), so epoch 3 could even be chosen as best."""
    script_val_accuracy(monkeypatch, {1: 0.60, 2: 0.40, 3: 0.90})
    predict_logits = trainer_module.predict_logits

    def nan_in_epoch_3(*args, **kwargs):
        logits = predict_logits(*args, **kwargs)
        return logits * math.nan if len(epochs_seen) == 2 else logits

    monkeypatch.setattr(trainer_module, "predict_logits", nan_in_epoch_3)
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match="validation logits became non-finite in epoch 3") as caught:
        distil(settings(), out_dir=run_dir, root=tmp_path)
    assert f"last good checkpoint: {run_dir / 'last'} (epoch 2)" in str(caught.value)
    assert_same_weights(weights_in(run_dir / "best.safetensors"), epochs_seen[0], "best")
    assert_same_weights(weights_in(run_dir / "last.safetensors"), epochs_seen[1], "last")
    assert json.loads((run_dir / "best.json").read_text())["metrics"]["epoch"] == 1
