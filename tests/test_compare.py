"""`train.py compare` on the tiny task: every method, 2 seeds, 1 epoch, all three report files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.front_ends import TINY, run_in_process

ALL = ("ce", "kd", "partial-kd", "union-kd", "dkd", "fitnet", "simkd", "fitnet+union-kd", "fitnet+uhc-kd")


def test_compare_writes_json_markdown_and_figure(home_with_teachers: Path, tmp_path: Path):
    out = tmp_path / "report"
    result = run_in_process("train.py", ["compare", *TINY, "--methods", ",".join(ALL),
                                         "--seeds", "2", "--epochs", "1", "--batch-size", "16",
                                         "--student", "mobilenetv3_small", "--scheduler", "step",
                                         "--dkd-beta", "4", "--out", str(out)], home_with_teachers)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "compare.json").read_text())
    assert set(report["methods"]) == set(ALL), report["failed"]
    for stats in report["methods"].values():
        for metric in ("accuracy", "macro_f1", "nll", "ece", "ece_ts", "errors_shared_teacher",
                       "errors_no_shared_teacher"):
            assert set(stats[metric]) == {"mean", "std", "runs"} and len(stats[metric]["runs"]) == 2
            assert stats[metric]["mean"] == pytest.approx(sum(stats[metric]["runs"]) / 2, rel=1e-12)
    assert 0.0 <= report["teachers_union_accuracy"] <= 1.0 and 0.0 <= report["teachers_uhc_accuracy"] <= 1.0
    assert 0.0 <= report["teachers_uhc_balanced_accuracy"] <= 1.0
    assert report["roster"]["teacher_2"] == ["Dress", "Coat", "Sandal", "Shirt"]  # recorded for the reader
    assert all(0.0 <= run["val_accuracy"] <= 1.0 for run in report["methods"]["ce"]["per_seed"])
    assert report["training"]["scheduler"] == "step" and report["method_options"]["dkd_beta"] == 4.0
    markdown = (out / "compare.md").read_text()
    assert "chosen on **validation accuracy**" in markdown and "2 seed(s)" in markdown
    assert "| partial-kd |" in markdown and "Teachers combined" in markdown and "UHC combination" in markdown
    assert "±" in next(line for line in markdown.splitlines() if line.startswith("| partial-kd |"))
    assert "scheduler step" in markdown and "no teacher knows both" in markdown
    assert "balanced over the training images" in markdown
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_rejects_unknown_methods(tmp_path: Path):
    result = run_in_process("train.py", ["compare", *TINY, "--methods", "ce,telepathy"], tmp_path)
    assert result.returncode == 2 and "telepathy" in result.stderr
