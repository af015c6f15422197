"""Killed or interrupted runs resume to exactly what an uninterrupted run produces.

README ("Interruption") promises the same weights and history, so the comparisons are exact:
both runs are subprocesses with the same environment (thread count included) on the same
machine, doing the same operations in the same order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.front_ends import REPO, TINY, assert_one_line_error, run_front_end

RUN = [*TINY, "--student", "mobilenetv3_small", "--epochs", "2", "--batch-size", "16", "--seed", "3"]


def start(args: list[str], home: Path) -> subprocess.Popen:
    env = {**os.environ, "AMALGAM_HOME": str(home), "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def same_outcome(a: Path, b: Path) -> None:
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(json.loads((a / "history.json").read_text())) == strip(
        json.loads((b / "history.json").read_text()))
    names = ["last.safetensors", "best.safetensors"]
    if (a / "best_method.safetensors").exists() or (b / "best_method.safetensors").exists():
        names.append("best_method.safetensors")  # the default method's regressors
    for name in names:
        x, y = load_file(str(a / name)), load_file(str(b / name))
        assert x.keys() == y.keys(), name
        assert all(torch.equal(x[k], y[k]) for k in x), name


@pytest.fixture(scope="module")
def straight(trained_home: Path, tmp_path_factory) -> Path:
    """The uninterrupted run both stopped runs must reproduce."""
    run_dir = tmp_path_factory.mktemp("interrupt") / "straight"
    result = run_front_end("train.py", [*RUN, "--out", str(run_dir)], trained_home)
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.mark.e2e
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(straight: Path, trained_home: Path,
                                                             tmp_path: Path):
    killed = tmp_path / "killed"
    process = start([*RUN, "--out", str(killed), "--checkpoint-every", "2"], trained_home)
    wait_for(killed / "last_state.pt", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    state = torch.load(killed / "last_state.pt", weights_only=True)
    assert state["epoch"] < 2  # it really was stopped before the end
    resumed = run_front_end("train.py", ["--resume", str(killed), "--quiet"], trained_home)
    assert resumed.returncode == 0, resumed.stderr
    same_outcome(straight, killed)


@pytest.mark.e2e
def test_ctrl_c_then_resume_matches_uninterrupted(straight: Path, trained_home: Path, tmp_path: Path):
    run_dir = tmp_path / "ctrl_c"
    # --checkpoint-every 1 only tells us when the first step is done; it writes what the
    # uninterrupted run keeps in memory, so the outcome is the same
    process = start([*RUN, "--out", str(run_dir), "--checkpoint-every", "1"], trained_home)
    wait_for(run_dir / "last_state.pt", process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    stopped = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert_one_line_error(stopped, "interrupted at epoch", f"resume with: python train.py --resume {run_dir}",
                          code=130)
    state = torch.load(run_dir / "last_state.pt", weights_only=True)
    assert state["epoch"] < 2 and state["progress"] is not None  # stopped mid-run, after a whole step
    resumed = run_front_end("train.py", ["--resume", str(run_dir), "--quiet"], trained_home)
    assert resumed.returncode == 0, resumed.stderr
    same_outcome(straight, run_dir)
