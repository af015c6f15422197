"""Killed or interrupted runs resume to exactly what an uninterrupted run produces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.conftest import REPO, TINY, run_front_end

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
        time.sleep(0.02)


def same_outcome(a: Path, b: Path) -> None:
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(json.loads((a / "history.json").read_text())) == strip(
        json.loads((b / "history.json").read_text()))
    for name in ("last.safetensors", "best.safetensors"):
        x, y = load_file(str(a / name)), load_file(str(b / name))
        assert all(torch.equal(x[k], y[k]) for k in x), name


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(trained_home: Path, tmp_path: Path):
    straight = tmp_path / "straight"
    assert run_front_end("train.py", [*RUN, "--out", str(straight)], trained_home).returncode == 0
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


def test_ctrl_c_saves_state_and_prints_the_resume_command(trained_home: Path, tmp_path: Path):
    run_dir = tmp_path / "ctrl_c"
    process = start([*RUN, "--epochs", "50", "--out", str(run_dir), "--checkpoint-every", "1"], trained_home)
    wait_for(run_dir / "last_state.pt", process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert f"python train.py --resume {run_dir}" in stderr
    state = torch.load(run_dir / "last_state.pt", weights_only=True)
    assert state["progress"] is not None or state["epoch"] >= 1
