"""Shared test helpers: run the real front ends in a subprocess with an isolated home."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_assets import server  # noqa: F401  (the 127.0.0.1 file server, shared as a fixture)

REPO = Path(__file__).resolve().parent.parent
# Small and fast: a tiny slice of the embedded task, the smallest student, one epoch.
TINY = ["--task", "fashion-mini", "--train-per-class", "12", "--img-size", "32", "--quiet"]


def run_front_end(
    script: str, args: list[str], home: Path, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run train.py / evaluation.py as a user would, with artefacts under `home`."""
    env = {**os.environ, "AMALGAM_HOME": str(home), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, str(REPO / script), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str, code: int = 2) -> None:
    """A user mistake: exit code 2, one `error:` line naming the problem, no traceback.

    `code` is for the few errors the product gives another code (130: interrupted by Ctrl-C).
    """
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory) -> Path:
    """A home with the tiny task's teachers trained once (1 epoch) for the whole session."""
    home = tmp_path_factory.mktemp("home")
    result = run_front_end("train.py", ["teachers", *TINY, "--epochs", "1", "--batch-size", "16"], home)
    assert result.returncode == 0, result.stderr
    return home
