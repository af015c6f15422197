"""`--teacher-trust per-class`: the KD weight on a class follows how far the teachers combined
know it better than the student (validation accuracy), by hand on tiny batches; the trainer
feeds the student's per-class validation accuracy after every epoch, start-up the teachers',
and the weights are saved with the run so a resume goes on with them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.engine.trainer import Trainer, validation_per_class
from amalgam.distill.losses import kd_loss
from amalgam.distill.losses.trust import TRUST_MARGIN, class_trust, per_class_accuracy
from amalgam.distill.methods import MethodOptions, TeacherOutputs, build_method
from amalgam.distill.runs.run import fit_to_validation
from amalgam.distill.teachers.cache import online_source
from amalgam.distill.teachers.loading import load_ensemble
from amalgam.models.model_input import ModelInput
from amalgam.models.teacher_archs import create_teacher
from amalgam.tasks.spec import DataSpec, TaskSpec, TeacherSpec
from tests.helpers.tiny_teachers import CPU, MEAN, SIZE, STD, tiny_task

NAN = float("nan")


def test_trust_is_one_until_the_student_leads_and_zero_a_margin_ahead():
    teachers = torch.tensor([0.9, 0.9, 0.9, 0.5, NAN, 0.7])
    student = torch.tensor([0.8, 0.95, 1.0, 0.9, 0.5, NAN])
    expected = [1.0, 1.0 - 0.05 / TRUST_MARGIN, 0.0, 0.0, 1.0, 1.0]
    torch.testing.assert_close(class_trust(teachers, student), torch.tensor(expected))


def test_per_class_accuracy_counts_each_class_and_leaves_an_unseen_one_unknown():
    predicted, labels = torch.tensor([0, 1, 1, 2, 0]), torch.tensor([0, 1, 0, 2, 0])
    got = per_class_accuracy(predicted, labels, 4)
    torch.testing.assert_close(got[:3], torch.tensor([2 / 3, 1.0, 1.0]))
    assert math.isnan(got[3])
    scores = {"per_class_accuracy": [2 / 3, 1.0, 1.0, 0.0], "support": [3, 1, 1, 0]}
    assert validation_per_class(scores)[:3].tolist() == pytest.approx([2 / 3, 1.0, 1.0])
    assert math.isnan(validation_per_class(scores)[3])


def test_weighted_kd_by_hand():
    """Image i: (1 - a w_i) CE_i and a w_i T² KL_i, averaged; weights of one are plain KD."""
    student = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    target = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    labels = torch.tensor([0, 1])
    alpha, temperature, weights = 0.5, 2.0, torch.tensor([1.0, 0.2])
    terms = kd_loss(student, target, labels, temperature, alpha, weights)
    ce, kl = [], []
    for z, p, y in zip(student.tolist(), target.tolist(), labels.tolist(), strict=True):
        log_norm = math.log(sum(math.exp(v) for v in z))
        ce.append(log_norm - z[y])
        q = [math.exp(v / temperature) for v in z]
        q = [v / sum(q) for v in q]
        kl.append(sum(a * math.log(a / b) for a, b in zip(p, q, strict=True)))
    expected_ce = ((1 - alpha * 1.0) * ce[0] + (1 - alpha * 0.2) * ce[1]) / 2
    expected_kd = (alpha * 1.0 * kl[0] + alpha * 0.2 * kl[1]) / 2 * temperature**2
    assert terms["loss_ce"].item() == pytest.approx(expected_ce, abs=1e-6)
    assert terms["loss_kd"].item() == pytest.approx(expected_kd, abs=1e-6)
    plain = kd_loss(student, target, labels, temperature, alpha)
    ones = kd_loss(student, target, labels, temperature, alpha, torch.ones(2))
    for name in plain:
        torch.testing.assert_close(ones[name], plain[name])


@pytest.mark.parametrize("method_name", ["uhc-kd", "uhc-ka", "fitnet+uhc-ka"])
def test_the_method_weighs_each_image_by_its_class_trust(method_name):
    """One teacher knowing every class (UHC is its softmax): fitted on validation logits where it
    is right on class a only, then told the student leads on b and c by a full margin."""
    spec = TaskSpec("r", ("a", "b", "c"), (TeacherSpec("t", ("a", "b", "c")),), DataSpec("none"))
    method = build_method(method_name, spec.roster(), MethodOptions(teacher_trust="per-class"))
    assert method.fits_validation
    validation = torch.tensor([[[3.0, 0.0, 0.0]], [[3.0, 0.0, 0.0]], [[3.0, 0.0, 0.0]]])  # says a, always
    line = method.fit_to_validation(validation, torch.tensor([0, 1, 2]))
    assert "per-class" in line
    method.observe_validation(torch.tensor([0.5, 0.05, 2 * TRUST_MARGIN]))
    uhc = method.parts[0] if method_name.startswith("fitnet") else method
    torch.testing.assert_close(method.class_trust.trust, torch.tensor([1.0, 0.5, 0.0]))
    logits, student = torch.tensor([[[1.0, 0.5, 0.0]]] * 3), torch.zeros(3, 3)
    labels = torch.tensor([0, 1, 2])
    got = uhc.loss_terms(student, None, TeacherOutputs(logits), labels)
    fixed = build_method(method_name.removeprefix("fitnet+"), spec.roster(), MethodOptions())
    per_image = [fixed.loss_terms(student[i:i + 1], None, TeacherOutputs(logits[i:i + 1]), labels[i:i + 1])
                 for i in range(3)]
    alpha = MethodOptions().alpha
    expected_kd = sum(w * t["loss_kd"] for w, t in zip([1.0, 0.5, 0.0], per_image, strict=True)) / 3
    ce = math.log(3)  # the student's logits are all zero
    expected_ce = sum(1 - alpha * w for w in [1.0, 0.5, 0.0]) * ce / 3
    assert got["loss_kd"].item() == pytest.approx(float(expected_kd), abs=1e-6)
    assert got["loss_ce"].item() == pytest.approx(expected_ce, abs=1e-6)
    # saved with the run under the same keys, alone or in a sum of terms
    assert {"class_trust.trust", "class_trust.teachers_accuracy"} <= set(method.state_dict())


def test_fixed_trust_fits_nothing_and_weighs_every_image_alike():
    spec = TaskSpec("r", ("a", "b"), (TeacherSpec("t", ("a", "b")),), DataSpec("none"))
    method = build_method("uhc-ka", spec.roster(), MethodOptions())
    assert not method.fits_validation and "class_trust.trust" not in method.state_dict()
    method.observe_validation(torch.tensor([1.0, 1.0]))  # a fixed trust ignores the student
    assert method.image_weights(torch.tensor([0, 1])) is None


@pytest.fixture
def tiny(tmp_path: Path):
    return tiny_task(tmp_path)


def test_start_up_fits_the_teachers_and_every_epoch_tells_the_student(tiny):
    spec, data, root = tiny
    ensemble = load_ensemble(spec, CPU, root)
    method = build_method("uhc-ka", spec.roster(), MethodOptions(teacher_trust="per-class"))
    config = TrainConfig(epochs=2, batch_size=8, quiet=True)
    fit_to_validation(method, ensemble, data, config)
    assert not method.class_trust.teachers_accuracy.isnan().all()
    told = []
    observe = method.observe_validation
    method.observe_validation = lambda accuracy: (told.append(accuracy), observe(accuracy))[1]
    torch.manual_seed(0)
    trainer = Trainer(create_teacher("cnn-small", spec.num_classes), method, ModelInput(SIZE, MEAN, STD),
                      data.train, data.val, spec.num_classes, config, online_source(ensemble))
    for _ in range(2):
        row = trainer.train_epoch()
        assert len(told) == trainer.epoch
        scores = trainer.validate()
        torch.testing.assert_close(told[-1], validation_per_class(scores), equal_nan=True)
    assert row["epoch"] == 2
    expected = class_trust(method.class_trust.teachers_accuracy, told[-1])
    torch.testing.assert_close(trainer.state_dict()["method"]["class_trust.trust"], expected)
