"""Artefact homes for tests: the tiny task's trained teachers, copied where a test may write."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.helpers.front_ends import TINY

# How the session's teachers are trained (tests/conftest.py, `trained_teachers`): 1 epoch.
TEACHER_FLAGS = ["teachers", *TINY, "--epochs", "1", "--batch-size", "16"]


def copy_teachers(trained_teachers: Path, home: Path) -> Path:
    """`home` with its own copy of the session's teachers: safe to damage, to write runs into."""
    shutil.copytree(trained_teachers, home / "checkpoints" / "fashion-mini", dirs_exist_ok=True)
    return home
