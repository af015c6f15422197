"""Targets computed once: with the teachers' outputs cached, a method's combined target per
image-view is computed at start-up (`teachers/cache.py`, `memoised_targets`) and looked up per
batch, never recomputed per batch per epoch; the online path still computes it per batch."""

from __future__ import annotations

import pytest
import torch

import amalgam.distill.methods.uhc_kd as uhc_kd_module
from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.engine.trainer import Trainer
from amalgam.distill.engine.views import mirror, to_unit_float
from amalgam.distill.losses import uhc_union_probs
from amalgam.distill.methods import MethodOptions, build_method
from amalgam.distill.runs.run import fit_to_training_set
from amalgam.distill.teachers.cache import (
    cached_teacher_source,
    inference_ensemble,
    online_source,
    teacher_cache_key,
    teacher_source_for,
)
from amalgam.distill.teachers.loading import load_ensemble
from amalgam.distill.teachers.store import CachedTeachers, load_or_build
from amalgam.models.model_input import ModelInput
from amalgam.models.teacher_archs import create_teacher
from tests.helpers.tiny_teachers import BIG, CPU, MEAN, SIZE, STD, TARGET_TOLERANCE, N, stems, tiny_task

T = 4.0
VIEWS = ("plain", "mirrored")  # what --augment flip caches
# A memoised target against one computed per batch from the same cached logits: the Newton
# solve stops once the batch's largest gradient is below 1e-9 (so a block's composition may move
# a target by about that), and the memo is stored in float32 (6e-8 relative).
MEMO_TOLERANCE = 1e-6


@pytest.fixture
def tiny(tmp_path):
    return tiny_task(tmp_path)


def count_target_rows(monkeypatch) -> list[int]:
    """Rows `uhc-kd` combines, over all calls (a spy around the solver it calls)."""
    rows = [0]

    def spy(logits, roster, temperature=1.0):
        rows[0] += logits.shape[0]
        return uhc_union_probs(logits, roster, temperature)

    monkeypatch.setattr(uhc_kd_module, "uhc_union_probs", spy)
    return rows


def trainer_for(spec, data, method, source, labels: str = "train") -> Trainer:
    torch.manual_seed(0)
    student = create_teacher("cnn-small", spec.num_classes)
    config = TrainConfig(epochs=2, batch_size=8, augment="flip", quiet=True, teacher_precision="fp32",
                         labels=labels)
    return Trainer(student, method, ModelInput(SIZE, MEAN, STD), data.train, data.val, spec.num_classes,
                   config, source)


def cached_source(spec, data, root, method):
    config = TrainConfig(augment="flip", quiet=True, teacher_precision="fp32")
    ensemble = load_ensemble(spec, CPU, root)
    return teacher_source_for(spec, data, method, config, ensemble, root, cache_dir=root / "cache",
                              budget_bytes=BIG)


def test_a_cached_run_combines_each_image_view_once(tiny, monkeypatch):
    spec, data, root = tiny
    rows = count_target_rows(monkeypatch)
    method = build_method("uhc-kd", spec.roster(), MethodOptions(temperature=T))
    source = cached_source(spec, data, root, method)
    assert rows[0] == N * 2  # both flip views of every image, at start-up
    trainer = trainer_for(spec, data, method, source)
    trainer.train_epoch()
    trainer.train_epoch()
    assert rows[0] == N * 2  # two epochs later: not one more


def test_the_online_path_still_combines_per_batch(tiny, monkeypatch):
    spec, data, root = tiny
    rows = count_target_rows(monkeypatch)
    method = build_method("uhc-kd", spec.roster(), MethodOptions(temperature=T))
    ensemble = inference_ensemble(load_ensemble(spec, CPU, root), TrainConfig(teacher_precision="fp32"))
    trainer_for(spec, data, method, online_source(ensemble)).train_epoch()
    assert rows[0] == N  # every training image once per epoch, as each batch is drawn


@pytest.mark.parametrize("name", ["uhc-kd", "fitnet+uhc-kd", "amalgam-kd", "fitnet+amalgam-kd", "cfl"])
def test_methods_with_targets_from_the_logits_alone_are_memoised(tiny, name):
    spec, _, _ = tiny
    method = build_method(name, spec.roster(), MethodOptions(temperature=T))
    assert method.fixed_targets
    logits = torch.randn(5, 2, 3)
    torch.testing.assert_close(method.teacher_targets(logits), uhc_union_probs(logits, spec.roster(), T))


@pytest.mark.parametrize("name, options",
                         [("kd", {}), ("fitnet", {}), ("amalgam-kd", {"target_neighbours": 1})])
def test_other_targets_are_not_memoised(tiny, name, options):
    """`kd`'s target reads the label; with --target-neighbours targets are fixed per image already."""
    spec, _, _ = tiny
    assert not build_method(name, spec.roster(), MethodOptions(**options)).fixed_targets


def test_memoised_targets_equal_per_batch_and_online_ones(tiny):
    spec, data, root = tiny
    roster = spec.roster()
    method = build_method("uhc-kd", roster, MethodOptions(temperature=T))
    source = cached_source(spec, data, root, method)
    ensemble = inference_ensemble(load_ensemble(spec, CPU, root), TrainConfig(teacher_precision="fp32"))
    index = torch.tensor([5, 0, 17, 33, 2, 39, 11])
    mirrored = torch.tensor([False, True, True, False, True, False, True])
    plain = to_unit_float(data.train.images[index], CPU)
    view = torch.where(mirrored[:, None, None, None], mirror(plain), plain)
    cached = source(index, view, mirrored)
    assert cached.targets is not None and cached.targets.shape == (len(index), spec.num_classes)
    per_batch = uhc_union_probs(cached.logits, roster, T)
    torch.testing.assert_close(cached.targets, per_batch, rtol=0.0, atol=MEMO_TOLERANCE)
    online = online_source(ensemble)(index, view, mirrored)
    # the cache promises its logits within TARGET_TOLERANCE of the largest |logit| of the online
    # ones; softmax(z / T) moves by at most 2 max|dz| / T and the union's solve, a smooth function
    # of the teachers' probabilities, is held to twice that again
    bound = 4 * TARGET_TOLERANCE["fp32"] * float(online.logits.abs().max()) / T
    online_targets = uhc_union_probs(online.logits, roster, T)
    torch.testing.assert_close(cached.targets, online_targets, rtol=0.0, atol=bound)
    wrong_view = source(index, plain, None).targets  # the mirrored rows looked up in the plain view
    assert float((wrong_view - cached.targets).abs().max()) > bound  # so the check above can fail


@pytest.mark.parametrize("name, labels", [("uhc-kd", "train"), ("amalgam-kd", "none")])
def test_training_with_the_memo_gives_the_same_losses(tiny, name, labels):
    """The same cached logits with and without the memo: the runs agree to the memo's rounding
    (the float32 store and the solver's stopping point); measured bit-equal on a Xeon, 1e-5
    relative allows other CPUs and block sizes."""
    spec, data, root = tiny
    options = MethodOptions(temperature=T, class_prior="uniform" if name == "amalgam-kd" else "none")
    ensemble = inference_ensemble(load_ensemble(spec, CPU, root), TrainConfig(teacher_precision="fp32"))
    key = teacher_cache_key(stems(spec), data.train, ensemble.inputs, views=VIEWS)
    entry = load_or_build(ensemble, data.train, key, root / "cache", VIEWS, None, BIG, CPU, quiet=True)
    histories = []
    for memoised in (True, False):
        method = build_method(name, spec.roster(), options)
        source = cached_teacher_source(entry, CPU, method if memoised else None)
        assert (source(torch.arange(2), torch.zeros(2, 3, SIZE, SIZE)).targets is not None) == memoised
        fit_to_training_set(method, source, data, TrainConfig(quiet=True))
        histories.append(trainer_for(spec, data, method, source, labels=labels).train_epoch())
    for metric in ("train_loss", "val_loss"):
        assert histories[0][metric] == pytest.approx(histories[1][metric], rel=1e-5), metric


def test_the_memo_follows_the_rows_views(tiny):
    """Rows are image * V + view: a hand-made two-view cache gives each sample its own view's target."""
    spec, _, _ = tiny
    method = build_method("uhc-kd", spec.roster(), MethodOptions(temperature=T))
    logits = torch.randn(6, 2, 2, 3) * 3
    logits[..., 2] = torch.where(torch.arange(2)[:, None] == 1, -1e4, logits[..., 2])  # teacher 2: 2 classes
    source = cached_teacher_source(CachedTeachers(("plain", "mirrored"), logits, None, 0), CPU, method)
    index, mirrored = torch.tensor([3, 1, 4]), torch.tensor([True, False, True])
    got = source(index, torch.zeros(3, 3, SIZE, SIZE), mirrored).targets
    expected = uhc_union_probs(logits[index, mirrored.long()], spec.roster(), T)
    torch.testing.assert_close(got, expected, rtol=0.0, atol=MEMO_TOLERANCE)
