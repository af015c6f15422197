"""`--class-prior uniform`: the label-free target reweighed per class so that, over the training
set, it spreads the images evenly; the weights by hand, their meaning at any temperature, and
the methods that fit them."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.losses import apply_class_weights, balancing_log_weights, class_balance, uhc_union_probs
from amalgam.distill.losses.class_balance import BALANCE_TOLERANCE, LOG_WEIGHT_LIMIT, label_marginal
from amalgam.distill.methods import MethodOptions, TeacherOutputs, build_method
from amalgam.distill.runs.run import fit_to_training_set
from amalgam.distill.teachers.cache import cached_teacher_source
from amalgam.distill.teachers.store import CachedTeachers
from amalgam.errors import UserError
from tests.helpers.small_models import padded, roster_of, teacher_logits


def test_identical_rows_are_balanced_by_hand():
    """Every row is [0.8, 0.2]: the rows must become [0.5, 0.5], so w0 / w1 = 0.2 / 0.8."""
    log_w = balancing_log_weights(torch.tensor([[0.8, 0.2]] * 4, dtype=torch.float64))
    expected = 0.5 * math.log(0.2 / 0.8)
    torch.testing.assert_close(log_w, torch.tensor([expected, -expected], dtype=torch.float64))


def test_reweighed_rows_average_to_uniform():
    torch.manual_seed(0)
    skew = torch.tensor([3.0, 0.0, -1.0, 0.5, 2.0])  # some classes far more likely than others
    probs = torch.softmax(torch.randn(200, 5) * 2 + skew, dim=1).double()  # no float32 rounding in the check
    assert (probs.mean(0) * 5 - 1).abs().max() > 0.5
    log_w = balancing_log_weights(probs)
    assert abs(float(log_w.mean())) < 1e-6
    balanced = apply_class_weights(probs, log_w)
    torch.testing.assert_close(balanced.sum(1), torch.ones(200, dtype=torch.float64))
    assert float((balanced.mean(0) * 5 - 1).abs().max()) < 2 * BALANCE_TOLERANCE


def test_weights_at_temperature_t_are_shifted_logits_softened():
    """One classifier: softmax(z/T)·w^(1/T), renormalised, is softmax((z + log w)/T)."""
    z = torch.tensor([[1.0, -0.5, 2.0], [0.3, 0.2, -1.0]])
    log_w = torch.tensor([0.4, -1.2, 0.8])
    for t in (1.0, 2.5, 4.0):
        torch.testing.assert_close(apply_class_weights(torch.softmax(z / t, 1), log_w, t),
                                   torch.softmax((z + log_w) / t, 1))


def test_a_class_no_row_gives_mass_is_refused():
    with pytest.raises(ValueError, match="no mass"):
        balancing_log_weights(torch.tensor([[1.0, 0.0], [0.7, 0.0]]))


def test_amalgam_kd_fits_uniform_weights_and_its_targets_average_to_uniform():
    roster = roster_of(("a", "b", "c"), ("b", "c", "d"), classes="abcd")
    logits = teacher_logits()
    plain = build_method("fitnet+amalgam-kd", roster, MethodOptions(temperature=2.0))
    assert not plain.fits_training_set and plain.fit_to_training_set(logits) is None
    uniform = MethodOptions(temperature=2.0, class_prior="uniform")
    balanced = build_method("fitnet+amalgam-kd", roster, uniform)
    assert balanced.fits_training_set
    amalgam = balanced.parts[0]
    with pytest.raises(RuntimeError, match="fitted at start-up"):
        amalgam.targets(logits, 2.0)
    line = balanced.fit_to_training_set(logits)
    assert line.startswith("class prior uniform") and "60 training images" in line
    at_one = amalgam.targets(logits, 1.0)
    assert float((at_one.mean(0) * 4 - 1).abs().max()) < 1e-5
    unbalanced = uhc_union_probs(logits, roster, 1.0)
    assert float((unbalanced.mean(0) * 4 - 1).abs().max()) > 0.1
    # at T the target is the balanced classifier softened: the weights enter as w^(1/T)
    expected = apply_class_weights(uhc_union_probs(logits, roster, 2.0), amalgam.class_log_weights, 2.0)
    torch.testing.assert_close(amalgam.targets(logits, 2.0), expected)
    student = torch.zeros(60, 4, requires_grad=True)
    loss = balanced.parts[0].loss_terms(student, None, TeacherOutputs(logits), None)["loss_kd"]
    loss.backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_start_up_fits_on_the_plain_view_from_the_training_source():
    """With a teacher cache, start-up reads the fit's logits from it (no teacher runs again):
    every training image once, in order, on the plain view, never the mirrored one."""
    logits = teacher_logits()
    mirrored = torch.randn_like(logits) * 5  # what a wrong view would hand the fit
    both_views = torch.stack([logits, mirrored], dim=1)
    cached = cached_teacher_source(CachedTeachers(("plain", "mirrored"), both_views, None, 0))
    asked = []

    def source(index, view, flipped=None):
        assert flipped is None and view.shape[0] == len(index)
        asked.append(index)
        return cached(index, view, flipped)

    roster = roster_of(("a", "b", "c"), ("b", "c", "d"), classes="abcd")
    uniform = MethodOptions(class_prior="uniform")
    started = build_method("amalgam-kd", roster, uniform)
    train = SimpleNamespace(images=torch.zeros(60, 1, 4, 4, dtype=torch.uint8))
    fit_to_training_set(started, source, SimpleNamespace(train=train), TrainConfig(quiet=True), batch_size=25)
    assert torch.equal(torch.cat(asked), torch.arange(60)) and [len(i) for i in asked] == [25, 25, 10]
    by_hand = build_method("amalgam-kd", roster, uniform)
    by_hand.fit_to_training_set(logits)
    torch.testing.assert_close(started.class_log_weights, by_hand.class_log_weights)


def test_adaptive_keeps_the_unchosen_teachers_classes_at_zero():
    roster = roster_of(("a", "b"), ("c", "d"), classes="abcd")
    logits = padded([3.0, 0.0], [0.0, 0.1], width=2)[None].repeat(5, 1, 1)
    logits[3:] = padded([0.0, 0.1], [0.0, 4.0], width=2)  # two images go to the second teacher
    method = build_method("adaptive", roster, MethodOptions(class_prior="uniform"))
    method.fit_to_training_set(logits)
    targets = method.parts[0].targets(logits, 1.0)
    assert torch.equal(targets[:3, 2:], torch.zeros(3, 2)) and torch.equal(targets[3:, :2], torch.zeros(2, 2))
    torch.testing.assert_close(targets.sum(1), torch.ones(5))
    # three images of four classes cannot be split evenly within {a, b}: no balance exists, and
    # the weights stop at the limit instead of overflowing
    assert method.parts[0].class_log_weights.abs().max() <= LOG_WEIGHT_LIMIT


def test_an_unknown_class_prior_is_refused():
    with pytest.raises(UserError, match="--class-prior must be one of: none, uniform, labels; got 'zipf'"):
        MethodOptions(class_prior="zipf")


def one_teacher_at_80_20(rows: int = 4):
    """One teacher on classes a, b saying [0.8, 0.2] on every image: its union combination is
    itself, and balanced over these images it says [0.5, 0.5] at any temperature."""
    roster = roster_of(("a", "b"), classes="ab")
    return roster, torch.log(torch.tensor([0.8, 0.2]))[None, None].repeat(rows, 1, 1)


def test_uhc_ka_with_a_uniform_prior_distils_towards_the_balanced_combination_by_hand():
    roster, logits = one_teacher_at_80_20()
    options = MethodOptions(temperature=2.0, alpha=0.5, class_prior="uniform")
    method = build_method("fitnet+uhc-ka", roster, options)
    assert method.fits_training_set and "class_prior" in method.options_used
    ka = method.parts[0]
    with pytest.raises(RuntimeError, match="fitted at start-up"):
        ka.targets_for(TeacherOutputs(logits))
    assert method.fit_to_training_set(logits).startswith("class prior uniform")
    half = torch.full((4, 2), 0.5)
    # unbalanced, the softened teacher says [2/3, 1/3] at T 2; w^(1/2) = [1/sqrt 2, sqrt 2] evens it
    torch.testing.assert_close(uhc_union_probs(logits, roster, 2.0)[0], torch.tensor([2 / 3, 1 / 3]))
    torch.testing.assert_close(ka.targets_for(TeacherOutputs(logits)), half)
    # the teachers' cache memoises the target before the prior; the prior is applied after it
    memo = ka.teacher_targets(logits)
    torch.testing.assert_close(ka.targets_for(TeacherOutputs(logits, targets=memo)), half)
    # student logits [1, 0] at T 2: q = softmax([0.5, 0]); loss_kd = alpha T² KL([0.5, 0.5] || q)
    student = torch.tensor([[1.0, 0.0]] * 4)
    q1 = 1 / (1 + math.exp(-0.5))
    kl = 0.5 * math.log(0.5 / q1) + 0.5 * math.log(0.5 / (1 - q1))
    terms = ka.loss_terms(student, None, TeacherOutputs(logits), torch.tensor([0, 1, 0, 1]))
    torch.testing.assert_close(terms["loss_kd"], torch.tensor(0.5 * 4 * kl))
    # the label's CE keeps the rest: logits [1, 0] cost log(1 + e^-1) on a, log(1 + e) on b
    ce = 0.5 * math.log(1 + math.exp(-1)) + 0.5 * math.log(1 + math.exp(1))
    torch.testing.assert_close(terms["loss_ce"], torch.tensor(0.5 * ce))


def test_uhc_kd_without_a_prior_fits_nothing_and_keeps_the_teachers_split():
    roster, logits = one_teacher_at_80_20()
    method = build_method("uhc-kd", roster, MethodOptions(temperature=1.0))
    assert not method.fits_training_set and method.fit_to_training_set(logits) is None
    torch.testing.assert_close(method.targets_for(TeacherOutputs(logits)), torch.tensor([[0.8, 0.2]] * 4))


def test_the_per_class_trust_scores_the_balanced_combination_when_the_prior_is_uniform():
    """Validation images of class b the teacher calls a at 0.8 / 0.2: unbalanced it gets them
    wrong; balanced over a training set where it says 0.9 / 0.1 everywhere (w_b / w_a = 9),
    they become 0.8 : 1.8, class b."""
    roster, logits = one_teacher_at_80_20()
    train = torch.log(torch.tensor([0.9, 0.1]))[None, None].repeat(6, 1, 1)
    options = MethodOptions(class_prior="uniform", teacher_trust="per-class")
    method = build_method("uhc-ka", roster, options)
    method.fit_to_training_set(train)
    method.fit_to_validation(logits, torch.tensor([1, 1, 1, 1]))
    torch.testing.assert_close(method.class_trust.teachers_accuracy[1], torch.tensor(1.0))
    unbalanced = build_method("uhc-ka", roster, MethodOptions(teacher_trust="per-class"))
    unbalanced.fit_to_validation(logits, torch.tensor([1, 1, 1, 1]))
    torch.testing.assert_close(unbalanced.class_trust.teachers_accuracy[1], torch.tensor(0.0))


def test_rows_reweighed_to_the_labels_spread_by_hand():
    """Every row [0.8, 0.2], labels a, a, a, b: add-one smoothed, the labels' marginal is
    (3 + 1) / 6 : (1 + 1) / 6 = 2/3 : 1/3, so every row becomes [2/3, 1/3]."""
    labels = torch.tensor([0, 0, 0, 1])
    torch.testing.assert_close(label_marginal(labels, 2), torch.tensor([2 / 3, 1 / 3], dtype=torch.float64))
    torch.testing.assert_close(label_marginal(torch.tensor([0, 1, 2] * 5), 3),
                               torch.full((3,), 1 / 3, dtype=torch.float64))
    # a class no training image has keeps a little mass
    assert float(label_marginal(torch.tensor([0, 0]), 2)[1]) == 0.25
    roster, logits = one_teacher_at_80_20()
    method = build_method("uhc-ka", roster, MethodOptions(class_prior="labels", temperature=1.0))
    with pytest.raises(RuntimeError, match="training labels"):
        method.fit_to_training_set(logits)
    line = method.fit_to_training_set(logits, labels=labels)
    assert line.startswith("class prior labels") and "as the training labels do" in line
    torch.testing.assert_close(method.targets_for(TeacherOutputs(logits)), torch.tensor([[2 / 3, 1 / 3]] * 4))
    # w_a / w_b = (2/3 / 0.8) / (1/3 / 0.2) = 1/2
    log_w = method.class_log_weights
    torch.testing.assert_close(float(log_w[0] - log_w[1]), math.log(0.5))


def test_the_labels_prior_on_a_balanced_set_is_the_uniform_prior():
    roster = roster_of(("a", "b", "c"), ("b", "c", "d"), classes="abcd")
    logits = teacher_logits()
    uniform = build_method("uhc-kd", roster, MethodOptions(class_prior="uniform"))
    uniform.fit_to_training_set(logits)
    spread = build_method("uhc-kd", roster, MethodOptions(class_prior="labels"))
    spread.fit_to_training_set(logits, labels=torch.arange(60) % 4)
    torch.testing.assert_close(spread.class_log_weights, uniform.class_log_weights)


def test_a_class_prior_is_fitted_on_a_bounded_sample_and_neighbours_on_every_image(monkeypatch):
    """A prior is C numbers: past max(PRIOR_FIT_MIN_ROWS, PRIOR_ROWS_PER_CLASS · C) images start-up
    asks the teachers (here their cache) for a fixed sample only, and fits on those images' labels;
    neighbour targets are per image, so they are fitted on every image."""
    monkeypatch.setattr(class_balance, "PRIOR_FIT_MIN_ROWS", 20)
    monkeypatch.setattr(class_balance, "PRIOR_ROWS_PER_CLASS", 2)  # 4 classes: 8, so the limit is 20
    rows = class_balance.prior_fit_rows(60, 4)
    assert len(rows) == 20 and bool((rows[1:] > rows[:-1]).all()) and int(rows.max()) < 60
    assert torch.equal(rows, class_balance.prior_fit_rows(60, 4))  # a fixed draw: a resume refits the same
    assert torch.equal(class_balance.prior_fit_rows(20, 4), torch.arange(20))
    roster = roster_of(("a", "b", "c"), ("b", "c", "d"), classes="abcd")
    logits, labels = teacher_logits(), torch.arange(60) % 4
    cached = cached_teacher_source(CachedTeachers(("plain",), logits[:, None], None, 0))
    train = SimpleNamespace(images=torch.zeros(60, 1, 4, 4, dtype=torch.uint8), labels=labels)
    prior = build_method("fitnet+uhc-ka", roster, MethodOptions(class_prior="labels"))
    neighbours = build_method("amalgam-kd", roster, MethodOptions(class_prior="uniform", target_neighbours=1))
    for method, expected in ((prior, rows), (neighbours, torch.arange(60))):
        asked = []

        def source(index, view, flipped=None, asked=asked):
            asked.append(index)
            return cached(index, view, flipped)

        data = SimpleNamespace(train=train)
        fit_to_training_set(method, source, data, TrainConfig(quiet=True), batch_size=8)
        assert torch.equal(torch.cat(asked), expected)
    by_hand = build_method("uhc-ka", roster, MethodOptions(class_prior="labels"))
    by_hand.fit_to_training_set(logits[rows], labels=labels[rows])
    torch.testing.assert_close(prior.parts[0].class_log_weights, by_hand.class_log_weights)
