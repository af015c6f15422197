"""Fixtures any test may use; the helpers themselves live in tests/helpers/ (docs/development.md).

REPO, TINY, run_front_end and assert_one_line_error are importable from here too, for tests
written before tests/helpers/ existed; new tests import them from tests.helpers.front_ends.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.helpers.front_ends import (  # noqa: I001, F401  (the names tests used to import from here)
    REPO,
    SCRATCH_PREFIX,
    TINY,
    assert_one_line_error,
    run_front_end,
)

# Modules read `amalgam.PROJECT_ROOT` when first imported, before any fixture runs: give this
# process a scratch artefact home first (front_ends imports no amalgam module until called), so
# that nothing run in-process (run_in_process, a `distil` without root=) writes into the
# checkout or into a user's own $AMALGAM_HOME. Subprocesses get their own home from run_front_end.
_SCRATCH_HOME = tempfile.mkdtemp(prefix=SCRATCH_PREFIX)
os.environ["AMALGAM_HOME"] = _SCRATCH_HOME

from tests.helpers.file_server import server  # noqa: E402, F401  (the 127.0.0.1 file server fixture)
from tests.helpers.homes import TEACHER_FLAGS, copy_teachers  # noqa: E402


def pytest_sessionfinish(session: pytest.Session) -> None:
    shutil.rmtree(_SCRATCH_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def trained_teachers(tmp_path_factory) -> Path:
    """checkpoints/fashion-mini/ with the tiny task's teachers, trained once per session.

    Trained by the real `train.py teachers` (which pins that command end to end). Never write
    here: take `home_with_teachers` for a home of your own.
    """
    home = tmp_path_factory.mktemp("teachers_home")
    result = run_front_end("train.py", TEACHER_FLAGS, home)
    assert result.returncode == 0, result.stderr
    return home / "checkpoints" / "fashion-mini"


@pytest.fixture
def home_with_teachers(trained_teachers: Path, tmp_path: Path) -> Path:
    """A fresh artefact home (under tmp_path) holding a copy of the trained teachers."""
    return copy_teachers(trained_teachers, tmp_path / "home")


@pytest.fixture(scope="session")
def trained_home(trained_teachers: Path) -> Path:
    """A home shared by the whole session, with the trained teachers in it.

    Tests add runs and reports to it (module-scoped fixtures build a student once); they must
    not change its checkpoints. A test that damages a teacher takes `home_with_teachers`.
    """
    return trained_teachers.parent.parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Two rules keep the quick loop (`-m "not slow"`) quick without every test saying so:
    a subprocess entry-point test (`e2e`) costs a Python start, and a test that needs the trained
    teachers waits for them; both are `slow`."""
    for item in items:
        if item.get_closest_marker("e2e") or "trained_teachers" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
