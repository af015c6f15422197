"""`train.py export`: the shipped file predicts what the PyTorch student predicts, says what it
expects, and can be graded by `evaluation.py` like any checkpoint."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from amalgam.distill.engine.batching import predict_logits
from amalgam.errors import UserError
from amalgam.harness.report_dirs import latest_report_dir
from amalgam.models import onnx_exporters
from amalgam.models.checkpoint import load_model
from amalgam.models.export import export_student, load_exported, read_export_metadata
from amalgam.models.model_input import model_input_for
from amalgam.models.onnx_exporters import DYNAMO_EXPORTER, LEGACY_EXPORTER, OPSET
from amalgam.tasks.builtin import get_task
from amalgam.tasks.loader import load_task_data
from tests.helpers.front_ends import TINY, assert_one_line_error, run_front_end, run_in_process

STUDENT = ["--student", "mobilenetv3_small", "--epochs", "1", "--batch-size", "16"]
CPU = torch.device("cpu")


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ValueError:  # in sys.modules as None: imports of it fail
        return False


# ONNX export and inference are the `export` extra; without it the TorchScript half still runs.
MISSING = [name for name in ("onnx", "onnxruntime", "onnxscript") if not _installed(name)]
needs_export_extra = pytest.mark.skipif(
    bool(MISSING), reason=f"needs the export extra (pip install -e '.[export]'): no {', '.join(MISSING)}"
)
FORMATS = [pytest.param("onnx", marks=needs_export_extra), "torchscript"]


@pytest.fixture(scope="module")
def run_dir(trained_home: Path) -> Path:
    # Outside runs/ so other tests' "newest student" stays theirs.
    out = trained_home / "export_run"
    result = run_in_process("train.py", [*TINY, *STUDENT, "--out", str(out)], trained_home)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def exported(run_dir: Path, trained_home: Path) -> dict[str, Path]:
    files = {}
    for fmt, name in (("onnx", "student.onnx"), ("torchscript", "student.pt")):
        if fmt == "onnx" and MISSING:
            continue
        result = run_in_process("train.py", ["export", str(run_dir), "--format", fmt], trained_home)
        assert result.returncode == 0, result.stderr
        assert f"wrote {run_dir / name}" in result.stdout
        files[fmt] = run_dir / name
    return files


@pytest.fixture(scope="module")
def test_logits(run_dir: Path):
    """PyTorch logits of the best student on the task's whole test split."""
    data = load_task_data(get_task("fashion-mini"))
    model, card = load_model(run_dir / "best")
    return data, predict_logits(model, model_input_for(card), data.test, CPU)


# Exported vs PyTorch logits, as a fraction of the largest |logit|. ONNX Runtime and a traced
# TorchScript graph run other fp32 kernels (fused, reordered sums), so only rounding may differ:
# ~1e-6 is typical; 1e-4 leaves room for other CPUs and builds, while a wrong preprocessing or
# weight moves logits by whole percents.
EXPORT_TOLERANCE = 1e-4


@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_file_matches_pytorch_on_the_test_set(fmt, exported, test_logits):
    data, reference = test_logits
    predictor, model_input, params = load_exported(exported[fmt], data.spec.classes)
    logits = predict_logits(predictor, model_input, data.test, CPU)
    assert len(data.test) == 600 and logits.shape == reference.shape
    bound = EXPORT_TOLERANCE * max(1.0, reference.abs().max().item())
    assert (logits - reference).abs().max().item() <= bound
    # the same class wherever it is not a near-tie that rounding within `bound` could flip
    top2 = reference.topk(2, dim=1).values
    clear = top2[:, 0] - top2[:, 1] > 2 * bound
    assert clear.float().mean() > 0.9  # the check below covers nearly every image
    assert torch.equal(logits.argmax(1)[clear], reference.argmax(1)[clear])
    assert params > 100_000


@pytest.mark.parametrize("fmt", FORMATS)
def test_metadata_holds_classes_and_preprocessing(fmt, exported, run_dir: Path):
    card = json.loads((run_dir / "best.json").read_text())
    meta = read_export_metadata(exported[fmt])
    assert meta["classes"] == card["classes"] == list(get_task("fashion-mini").classes)
    assert (meta["img_size"], meta["mean"], meta["std"]) == (32, card["mean"], card["std"])
    assert meta["arch"] == "mobilenetv3_small" and meta["task"] == "fashion-mini"
    assert "(x - mean) / std" in meta["input"]


@needs_export_extra
def test_onnx_goes_through_the_current_exporter(exported):
    import onnx

    assert read_export_metadata(exported["onnx"])["exporter"] == DYNAMO_EXPORTER
    proto = onnx.load(str(exported["onnx"]))
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {OPSET}
    assert [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim][0] == "batch"


@needs_export_extra
@pytest.mark.parametrize("why", ["unavailable", "fails"])
def test_onnx_falls_back_to_the_legacy_exporter_in_one_line(why, run_dir: Path, test_logits, tmp_path,
                                                             monkeypatch, capsys):
    """An old torch (no dynamo exporter) or a graph torch.export cannot take: the legacy exporter
    writes the file, one line says why, and the file still predicts what PyTorch predicts."""
    if why == "unavailable":
        monkeypatch.setattr(onnx_exporters, "dynamo_unavailable", lambda: "torch 2.0 has no dynamo exporter")
    else:
        def broken(model, example):
            raise RuntimeError("unsupported operator\nlong trace")
        monkeypatch.setattr(onnx_exporters, "_dynamo_onnx", broken)
    target = export_student(run_dir, "onnx", tmp_path / "legacy.onnx")
    notes = [line for line in capsys.readouterr().out.splitlines() if "exporter" in line]
    expected = {"unavailable": "has no dynamo exporter",
                "fails": "failed (RuntimeError: unsupported operator)"}[why]
    assert len(notes) == 1 and "TorchScript-based" in notes[0] and expected in notes[0]
    assert read_export_metadata(target)["exporter"] == LEGACY_EXPORTER
    data, reference = test_logits
    predictor, model_input, _ = load_exported(target, data.spec.classes)
    logits = predict_logits(predictor, model_input, data.test, CPU)
    bound = EXPORT_TOLERANCE * max(1.0, reference.abs().max().item())
    assert (logits - reference).abs().max().item() <= bound


def test_export_writes_a_model_report(exported, run_dir: Path):
    report = json.loads((run_dir / "model_report.json").read_text())
    names = [row["name"] for row in report["models"]]
    assert names[:3] == ["teacher_1", "teacher_2", "teacher_3"]
    assert "student (pytorch)" in names and report["notes"] == []
    for row in report["models"]:
        assert row["params"] > 0 and row["file_bytes"] > 0 and row["latency_ms_per_image"] > 0


@pytest.mark.e2e
@needs_export_extra
def test_evaluation_grades_an_onnx_file(exported, trained_home: Path, tmp_path: Path):
    result = run_front_end(
        "evaluation.py",
        ["--task", "fashion-mini", "--checkpoint", str(exported["onnx"]), "--out", str(tmp_path), "--quiet"],
        trained_home,
    )
    assert result.returncode == 0, result.stderr
    report = latest_report_dir(tmp_path / "fashion-mini")  # one folder per graded student
    results = json.loads((report / "results.json").read_text())
    assert results["n_samples"] == 600 and results["model_path"] == str(exported["onnx"])
    assert results["params"] == read_export_metadata(exported["onnx"])["params"]


@needs_export_extra
def test_exported_file_refuses_another_tasks_classes(exported):
    with pytest.raises(UserError, match="predicts classes"):
        load_exported(exported["onnx"], ("cat", "dog"))


def test_bad_format_is_one_line_error(run_dir: Path, trained_home: Path):
    result = run_in_process("train.py", ["export", str(run_dir), "--format", "tflite"], trained_home)
    assert result.returncode == 2
    assert_one_line_error(result, "--format", "tflite")


def test_missing_run_dir_and_wrong_suffix_are_user_errors(run_dir: Path, tmp_path: Path):
    with pytest.raises(UserError, match="neither a run directory nor a checkpoint"):
        export_student(tmp_path / "nowhere", "onnx")
    with pytest.raises(UserError, match="must end in .onnx"):
        export_student(run_dir, "onnx", tmp_path / "student.bin")
