"""Grade a student on a task's test split and write what a person looks at.

The report folder (evaluation/<task>/<student>/, chosen by report_dirs.py) gets results.json
(a superset of the CAS771 reference app's schema), sample_predictions.png,
confusion_matrix.png and reliability.png.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from amalgam import PROJECT_ROOT
from amalgam.distill.engine.batching import predict_logits
from amalgam.errors import UserError
from amalgam.harness.plots import confusion_figure, prediction_grid, reliability_figure
from amalgam.models.cas771_format import load_cas771_student
from amalgam.models.checkpoint import atomic_write_bytes, checkpoint_stem, load_model
from amalgam.models.export import is_exported_file, load_exported
from amalgam.models.metrics import classification_scores, fit_temperature, reliability_bins
from amalgam.models.model_input import ModelInput, model_input_for
from amalgam.tasks.loader import TaskData
from amalgam.tasks.spec import CAS771_FORMAT, FORMAT_ALIASES


@dataclass
class LoadedStudent:
    """A model ready to predict, however it was stored."""

    predict: nn.Module
    model_input: ModelInput
    path: Path
    params: int


def newest_student(task: str, runs_root: Path = PROJECT_ROOT / "runs") -> Path:
    """The best checkpoint of the task's most recently written run."""
    candidates = []
    for card_path in runs_root.glob("*/best.json"):
        try:
            card = json.loads(card_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a half-written or foreign file is not a student to grade
        if card.get("task") == task and card_path.with_suffix(".safetensors").exists():
            candidates.append((card_path.stat().st_mtime, card_path))
    if not candidates:
        raise UserError(
            f"no trained student for task {task} under {runs_root}; run "
            f"`python train.py --task {task}` or pass --checkpoint"
        )
    return checkpoint_stem(max(candidates)[1])


def load_student(path: Path, classes: tuple[str, ...]) -> LoadedStudent:
    model, card = load_model(path, classes)
    return LoadedStudent(
        model, model_input_for(card), checkpoint_stem(path), sum(p.numel() for p in model.parameters())
    )


def load_any_student(
    path: Path, classes: tuple[str, ...], fmt: str = "auto", data: TaskData | None = None
) -> LoadedStudent:
    """An amalgam checkpoint, a file from `train.py export` (.onnx, or a TorchScript .pt
    carrying amalgam.json), or (`--format cas771`, or another .pth/.pt) the CAS771
    reference app's state_dict.

    Exported files carry their classes and preprocessing. The reference app's files carry none;
    like that app, they get 64 px input normalised with the training split's statistics (`data`),
    else ImageNet's.
    """
    path = Path(path)
    fmt = FORMAT_ALIASES.get(fmt, fmt)
    if fmt not in ("auto", "amalgam", CAS771_FORMAT):
        raise UserError(f"--format must be one of: auto, amalgam, {CAS771_FORMAT} (the reference app's "
                        f".pth); got {fmt!r}")
    if fmt == "auto" and is_exported_file(path):
        predictor, model_input, params = load_exported(path, classes)
        return LoadedStudent(predictor, model_input, path, params)
    if fmt == CAS771_FORMAT or (fmt == "auto" and path.suffix in (".pth", ".pt")):
        stats = {"mean": data.mean, "std": data.std} if data is not None else {}
        model, model_input = load_cas771_student(path, classes, **stats)
        return LoadedStudent(model, model_input, path, sum(p.numel() for p in model.parameters()))
    return load_student(path, classes)


def score_student(student: LoadedStudent, data: TaskData, device: torch.device) -> dict:
    """Test scores, with calibration before and after a temperature fitted on validation."""
    predict = student.predict.to(device).eval()
    return calibrated_test_scores(predict, student.model_input, data, device, str(student.path))


def calibrated_test_scores(
    predict, model_input: ModelInput, data: TaskData, device: torch.device, name: str = "the student"
) -> dict:
    """Score the test split once; the temperature is fitted on validation logits only."""
    val_logits = predict_logits(predict, model_input, data.val, device)
    check_finite(val_logits, name, "validation")
    test_logits = predict_logits(predict, model_input, data.test, device)
    check_finite(test_logits, name, "test")
    n = data.spec.num_classes
    scores = classification_scores(test_logits, data.test.labels, n)
    temperature = fit_temperature(val_logits, data.val.labels)
    scaled = classification_scores(test_logits / temperature, data.test.labels, n)
    scores.update(
        temperature=temperature,
        nll_ts=scaled["nll"],
        ece_ts=scaled["ece"],
        reliability=reliability_bins(test_logits, data.test.labels),
        reliability_ts=reliability_bins(test_logits / temperature, data.test.labels),
    )
    scores["predictions"] = test_logits.argmax(1)
    return scores


def make_report_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise UserError(
            f"cannot write reports into {out_dir}: {exc.filename} is a file; pass another --out"
        ) from exc


def check_finite(logits: torch.Tensor, name: str, split: str) -> None:
    """NaN or inf logits mean damaged weights: say so instead of failing inside the metrics."""
    if not torch.isfinite(logits).all():
        raise UserError(
            f"the logits of {name} on the {split} split are not finite (NaN or inf): its weights are "
            "damaged; retrain it or grade another checkpoint"
        )


def student_label(path: Path) -> str:
    """Short enough for a figure title: the file and the folder it is in (`<run>/best`)."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def evaluate_student(student: LoadedStudent, data: TaskData, out_dir: Path, device: torch.device) -> dict:
    spec = data.spec
    scores = score_student(student, data, device)
    preds = scores.pop("predictions")
    names = list(spec.classes)
    results = {
        "task": spec.name,
        "model_path": str(student.path),
        "overall_accuracy": round(100 * scores["accuracy"], 2),
        "per_class_accuracy": {
            c: round(100 * a, 2) for c, a in zip(names, scores["per_class_accuracy"], strict=True)
        },
        "macro_f1": scores["macro_f1"],
        "per_class_f1": dict(zip(names, scores["per_class_f1"], strict=True)),
        "confusion_matrix": scores["confusion_matrix"],
        "classes": names,
        "n_samples": len(data.test),
        "params": student.params,
        "nll": scores["nll"],
        "ece": scores["ece"],
        "temperature": scores["temperature"],
        "nll_ts": scores["nll_ts"],
        "ece_ts": scores["ece_ts"],
        "reliability": scores["reliability"],
        "reliability_ts": scores["reliability_ts"],
        "split": "test",
    }
    make_report_dir(out_dir)
    who = f"task {spec.name}: {student_label(student.path)}"
    prediction_grid(data.test.images, data.test.labels, preds, names, out_dir / "sample_predictions.png",
                    f"{who}, test accuracy {results['overall_accuracy']:.2f} % ({len(data.test)} images)")
    confusion_figure(
        scores["confusion_matrix"],
        names,
        out_dir / "confusion_matrix.png",
        f"task {spec.name}: accuracy {results['overall_accuracy']:.2f} %",
    )
    reliability_figure(
        scores["reliability"],
        scores["reliability_ts"],
        scores["temperature"],
        out_dir / "reliability.png",
        f"{who}: calibration on the test split ({len(data.test)} predictions)",
        ece=scores["ece"],
        ece_scaled=scores["ece_ts"],
    )
    text = json.dumps(results, indent=2)
    atomic_write_bytes(out_dir / "results.json", lambda p: p.write_text(text))
    return results
