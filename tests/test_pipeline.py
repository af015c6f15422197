"""`python train.py pipeline` (what `make demo` runs): every stage's output, on the tiny task."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from amalgam.distill.methods import DEFAULT_METHOD
from amalgam.distill.runs.recipes import LABELED_RECIPE
from amalgam.harness.report_dirs import latest_report_dir
from amalgam.workflows.pipeline import SUMMARY_FILE
from tests.helpers.front_ends import run_front_end

PIPELINE = ["pipeline", "--task", "fashion-mini", "--train-per-class", "12", "--img-size", "32",
            "--teacher-epochs", "1", "--epochs", "1", "--student", "mobilenetv3_small", "--quiet"]


@pytest.mark.e2e
def test_pipeline_trains_teachers_both_students_and_evaluates(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("COLUMNS", "200")  # the summary table on one line per row
    home = tmp_path / "home"  # its own home: it trains teachers the other tests must not see
    result = run_front_end("train.py", PIPELINE, home)
    assert result.returncode == 0, result.stderr

    for k in (1, 2, 3):  # 1/4 teachers
        stem = home / "checkpoints" / "fashion-mini" / f"teacher_{k}"
        card = json.loads(stem.with_suffix(".json").read_text())
        assert stem.with_suffix(".safetensors").stat().st_size > 0
        assert card["kind"] == "teacher" and card["trained_on"]["epochs"] == 1

    runs = {}  # 2/4 the CE baseline and 3/4 the distilled student, one run directory each
    for run_dir in (home / "runs").iterdir():
        config = json.loads((run_dir / "config.json").read_text())
        runs[config["method"]] = run_dir
        assert run_dir.name.endswith(f"_task_fashion-mini_pipeline_{config['method']}")
        assert config["student"] == "mobilenetv3_small" and config["train"]["epochs"] == 1
        assert config["train"]["augment"] == LABELED_RECIPE.values["augment"]  # CE too: the same views
        assert len(json.loads((run_dir / "history.json").read_text())) == 1
        assert (run_dir / "best.safetensors").stat().st_size > 0
    assert sorted(runs) == sorted({"ce", DEFAULT_METHOD})
    distilled_options = json.loads((runs[DEFAULT_METHOD] / "config.json").read_text())["method_options"]
    for key in ("teacher_trust", "class_prior", "temperature", "hint_weight"):  # no --method: the recipe
        assert distilled_options[key] == LABELED_RECIPE.values[key], key

    out = latest_report_dir(home / "evaluation" / "fashion-mini")  # 4/4 the distilled student, test split
    results = json.loads((out / "results.json").read_text())
    assert Path(results["model_path"]) == runs[DEFAULT_METHOD] / "best"
    assert results["n_samples"] == 600
    for png in ("sample_predictions.png", "confusion_matrix.png", "reliability.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"

    with (out / SUMMARY_FILE).open() as fh:  # the printed table, kept beside the report
        kept = list(csv.reader(fh))
    assert kept[0] == ["model", "scored on", "accuracy"] and len(kept) == 1 + 3 * 2 + 4
    assert kept[-1] == [f"student, distilled ({DEFAULT_METHOD})", "all classes",
                        f"{results['overall_accuracy'] / 100:.2%}"]

    table = result.stdout.splitlines()
    distilled = [row for row in table if f"student, distilled ({DEFAULT_METHOD})" in row]
    assert len(distilled) == 1 and f"{results['overall_accuracy'] / 100:.2%}" in distilled[0]
    for label in ("teacher_1", "teacher_2", "teacher_3", "teachers combined",
                  "student, CE baseline (mobilenetv3_small)"):
        assert any(label in row and "%" in row for row in table), label
