"""torchrun with two CPU processes (gloo): rank 0 writes, metrics equal a single-process check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from amalgam.distill.trainer import predict_logits
from amalgam.harness.evaluate import load_student
from amalgam.tasks.builtin import get_task
from amalgam.tasks.loader import load_task_data
from tests.conftest import REPO


def test_torchrun_two_processes_on_cpu(trained_home: Path, tmp_path: Path):
    run_dir = tmp_path / "ddp_run"
    env = {**os.environ, "AMALGAM_HOME": str(trained_home), "PYTHONWARNINGS": "ignore"}
    args = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29731",
        str(REPO / "train.py"),
        "--task",
        "fashion-mini",
        "--train-per-class",
        "12",
        "--img-size",
        "32",
        "--student",
        "mobilenetv3_small",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--method",
        "kd",
        "--device",
        "cpu",
        "--out",
        str(run_dir),
    ]
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("best epoch 1 (chosen on validation)") == 1  # only rank 0 reports
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history) == 1
    # the saved student, loaded in one process, scores exactly what the two ranks logged
    spec = get_task("fashion-mini")
    data = load_task_data(spec, train_per_class=12)
    student = load_student(run_dir / "best", spec.classes)
    logits = predict_logits(student.predict, student.model_input, data.val, torch.device("cpu"))
    accuracy = float((logits.argmax(1) == data.val.labels).float().mean())
    assert accuracy == history[0]["val_acc"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["method"] == "kd"
