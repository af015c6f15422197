"""Calibration figures against references computed here from the definitions (NLL,
ECE with 15 equal-width bins, raw and after one temperature fitted on validation by NLL).

The evaluation and `compare` paths are driven by a student that looks its logits up by an
id written into each image's pixels, so validation and test logits can be given different
scales: a temperature fitted on the test split would give other numbers than the one fitted
on validation, and the tests say which one was used.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from amalgam.harness.evaluate import LoadedStudent, calibrated_test_scores, evaluate_student
from amalgam.models.metrics import (
    classification_scores,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)
from amalgam.models.model_input import ModelInput
from amalgam.tasks.images import ImageSet
from amalgam.tasks.loader import TaskData
from amalgam.tasks.spec import DataSpec, TaskSpec, TeacherSpec
from amalgam.workflows.compare import score_arm

CPU = torch.device("cpu")
BINS = 15


# --- references, from the definitions -------------------------------------------------------


def reference_nll(logits: torch.Tensor, labels: torch.Tensor) -> float:
    log_probs = torch.log_softmax(logits.double(), dim=1)
    return float(-log_probs[torch.arange(len(labels)), labels].mean())


def reference_bins(logits: torch.Tensor, labels: torch.Tensor, bins: int = BINS) -> list[tuple]:
    """Per bin (lo, hi] = (b/bins, (b+1)/bins]: count, mean confidence, accuracy."""
    probs = torch.softmax(logits.double(), dim=1)
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).double()
    rows = []
    for b in range(bins):
        inside = (confidence > b / bins) & (confidence <= (b + 1) / bins)
        n = int(inside.sum())
        if n:
            rows.append((n, float(confidence[inside].mean()), float(correct[inside].mean())))
        else:
            rows.append((0, 0.0, 0.0))
    return rows


def reference_ece(logits: torch.Tensor, labels: torch.Tensor, bins: int = BINS) -> float:
    return sum(n / len(labels) * abs(acc - conf) for n, conf, acc in reference_bins(logits, labels, bins))


def logits_for(confidences: list[float], classes: int = 3) -> torch.Tensor:
    """Rows whose softmax is exactly (c, rest spread evenly): class 0 predicted with confidence c."""
    rows = [[math.log(c)] + [math.log((1 - c) / (classes - 1))] * (classes - 1) for c in confidences]
    return torch.tensor(rows, dtype=torch.float32)


def sampled_task_logits(n: int, classes: int, scale: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels drawn from softmax(z): z is calibrated, so z * scale needs temperature `scale`."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, classes, generator=gen) * 1.5
    labels = torch.multinomial(torch.softmax(z, dim=1), 1, generator=gen).squeeze(1)
    return z * scale, labels


# --- the pure metrics -------------------------------------------------------------------------


def test_ece_by_hand_uses_15_equal_width_bins():
    # confidences 0.92/0.88 share bin 13 of 15 (one right, one wrong); 0.51 and 0.58 fall in
    # bins 7 and 8 of 15 but share bin 5 of 10, so another bin count gives another answer
    logits = logits_for([0.92, 0.88, 0.51, 0.58])
    labels = torch.tensor([0, 1, 0, 2])  # right, wrong, right, wrong
    by_hand = (2 / 4) * abs(0.5 - 0.90) + (1 / 4) * abs(1 - 0.51) + (1 / 4) * abs(0 - 0.58)
    assert by_hand == pytest.approx(0.4675)
    assert reference_ece(logits, labels) == pytest.approx(by_hand, abs=1e-6)
    assert reference_ece(logits, labels, bins=10) == pytest.approx(0.2625, abs=1e-6)  # not 15 bins
    assert expected_calibration_error(logits, labels, 3) == pytest.approx(by_hand, abs=1e-5)


def test_nll_by_hand():
    logits = logits_for([0.92, 0.88, 0.51, 0.58])
    labels = torch.tensor([0, 1, 0, 2])
    by_hand = -(math.log(0.92) + math.log(0.06) + math.log(0.51) + math.log(0.21)) / 4
    assert reference_nll(logits, labels) == pytest.approx(by_hand, abs=1e-6)
    assert classification_scores(logits, labels, 3)["nll"] == pytest.approx(by_hand, abs=1e-5)


def test_ece_nll_and_bins_match_the_references_on_random_logits():
    logits, labels = sampled_task_logits(3000, 7, scale=2.5, seed=1)
    scores = classification_scores(logits, labels, 7)
    assert scores["nll"] == pytest.approx(reference_nll(logits, labels), abs=1e-5)
    assert scores["ece"] == pytest.approx(reference_ece(logits, labels), abs=1e-5)
    # 10 bins would give 5e-4 more here: 50 times the tolerance above
    assert abs(reference_ece(logits, labels) - reference_ece(logits, labels, bins=10)) > 1e-4
    diagram = reliability_bins(logits, labels)
    assert diagram["edges"] == pytest.approx([b / BINS for b in range(BINS + 1)])
    expected = reference_bins(logits, labels)
    assert diagram["count"] == [n for n, _, _ in expected]
    assert diagram["confidence"] == pytest.approx([c for _, c, _ in expected], abs=1e-6)
    assert diagram["accuracy"] == pytest.approx([a for _, _, a in expected], abs=1e-6)


@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_fitted_temperature_recovers_a_known_scale(scale):
    logits, labels = sampled_task_logits(4000, 5, scale, seed=2)
    temperature = fit_temperature(logits, labels)
    # a maximum-likelihood estimate from 4000 samples: within 10 %, measured within 3 %
    assert temperature == pytest.approx(scale, rel=0.10)
    assert reference_nll(logits / temperature, labels) <= reference_nll(logits, labels) + 1e-6


# --- which split the temperature comes from ---------------------------------------------------

CLASSES = tuple("abcde")
VAL_SCALE, TEST_SCALE = 3.0, 0.5  # over-confident on validation, under-confident on test
N_VAL, N_TEST = 1500, 1500
SIZE = 8  # the smallest image a task accepts


class LookupStudent(nn.Module):
    """Returns table[id], the id being written into pixels (0,0) of channels 0 and 1."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("table", table.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = (x[:, :2, 0, 0] * 255).round().long()  # ModelInput below leaves x = view
        return self.table[pixels[:, 0] + 256 * pixels[:, 1]]


def id_images(ids: torch.Tensor) -> torch.Tensor:
    images = torch.zeros(len(ids), 3, SIZE, SIZE, dtype=torch.uint8)
    images[:, 0, 0, 0] = (ids % 256).to(torch.uint8)
    images[:, 1, 0, 0] = (ids // 256).to(torch.uint8)
    return images


@pytest.fixture(scope="module")
def split_scales():
    """Task data whose val and test logits differ in scale, and the student that gives them."""
    val_logits, val_labels = sampled_task_logits(N_VAL, len(CLASSES), VAL_SCALE, seed=3)
    test_logits, test_labels = sampled_task_logits(N_TEST, len(CLASSES), TEST_SCALE, seed=4)
    table = torch.cat([val_logits, test_logits])
    ids = torch.arange(N_VAL + N_TEST)
    val = ImageSet(id_images(ids[:N_VAL]), val_labels)
    test = ImageSet(id_images(ids[N_VAL:]), test_labels)
    teachers = (TeacherSpec("t1", ("a", "b", "c")), TeacherSpec("t2", ("c", "d", "e")))
    spec = TaskSpec("calibration", CLASSES, teachers, DataSpec("none"), img_size=SIZE)
    data = TaskData(spec, val, val, test, (0.0,) * 3, (1.0,) * 3)
    t_val = fit_temperature(val_logits, val_labels)
    t_test = fit_temperature(test_logits, test_labels)
    assert t_val == pytest.approx(VAL_SCALE, rel=0.15) and t_test == pytest.approx(TEST_SCALE, rel=0.15)
    expected = {
        "temperature": t_val,
        "nll": reference_nll(test_logits, test_labels),
        "ece": reference_ece(test_logits, test_labels),
        "nll_ts": reference_nll(test_logits / t_val, test_labels),
        "ece_ts": reference_ece(test_logits / t_val, test_labels),
        "accuracy": float((test_logits.argmax(1) == test_labels).float().mean()),
    }
    # fitting on test would be visibly different: the test is able to tell
    assert abs(reference_ece(test_logits / t_test, test_labels) - expected["ece_ts"]) > 0.1
    assert abs(reference_nll(test_logits / t_test, test_labels) - expected["nll_ts"]) > 0.1
    model_input = ModelInput(SIZE, (0.0,) * 3, (1.0,) * 3)
    return data, table, model_input, expected


def assert_calibrated_on_validation(
    got: dict, expected: dict, keys: tuple[str, ...] = ("nll", "ece", "nll_ts", "ece_ts", "accuracy")
) -> None:
    assert got["temperature"] == pytest.approx(expected["temperature"], rel=1e-4)
    for key in keys:
        assert got[key] == pytest.approx(expected[key], abs=1e-4), key


def test_scores_fit_the_temperature_on_validation_and_score_test(split_scales):
    data, table, model_input, expected = split_scales
    scores = calibrated_test_scores(LookupStudent(table).eval(), model_input, data, CPU)
    assert_calibrated_on_validation(scores, expected)
    test_logits = table[N_VAL:]
    scaled = reliability_bins(test_logits / expected["temperature"], data.test.labels)
    assert scores["reliability_ts"]["count"] == scaled["count"]


def test_evaluation_report_uses_the_validation_temperature(split_scales, tmp_path: Path):
    data, table, model_input, expected = split_scales
    student = LoadedStudent(LookupStudent(table), model_input, tmp_path / "student", 0)
    evaluate_student(student, data, tmp_path / "report", CPU)
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert_calibrated_on_validation({**results, "accuracy": results["overall_accuracy"] / 100}, expected)


def test_compare_scores_the_best_checkpoint_with_the_validation_temperature(split_scales, tmp_path: Path):
    """`compare` reloads best.safetensors, then calibrates on validation like evaluation does."""
    data, table, model_input, expected = split_scales
    save_file({"table": table.contiguous()}, str(tmp_path / "best.safetensors"))
    student = LookupStudent(torch.zeros_like(table))  # the in-memory (last) weights predict nothing
    trainer = SimpleNamespace(student=student, student_input=model_input,
                              method=SimpleNamespace(eval=lambda: None, predict=lambda s, x: s(x)))
    result = SimpleNamespace(trainer=trainer, run_dir=tmp_path, best={"epoch": 2, "val_acc": 0.5})
    scores = score_arm(result, data, CPU)
    assert_calibrated_on_validation(scores, expected, keys=("nll", "ece", "ece_ts", "accuracy"))
    assert scores["best_epoch"] == 2
