"""Run the front ends as a user does, and check the one-line error a user mistake gives.

`run_front_end` starts the real script in a subprocess (Python and torch start-up: 3-5 s a
call); `run_in_process` runs the same Typer app through the same `run_cli` in this process and
returns the same kind of result. Use the subprocess where the entry point itself is the point
(a signal, an exit code set outside `run_cli`, the script file) and the in-process run for
everything else: error messages, parsed options, short runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Small and fast: a tiny slice of the embedded task, the smallest student, one epoch.
TINY = ["--task", "fashion-mini", "--train-per-class", "12", "--img-size", "32", "--quiet"]
# The name of the session's scratch artefact home (tests/conftest.py), which run_in_process empties.
SCRATCH_PREFIX = "amalgam-test-home-"


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


def run_in_process(script: str, args: list[str], home: Path | None = None) -> subprocess.CompletedProcess:
    """What `run_front_end(script, args, home)` returns, without starting a Python (3-5 s saved).

    Modules read `amalgam.PROJECT_ROOT` once, at import, and in this process it is the session's
    scratch home (tests/conftest.py). So the command runs in that scratch home, emptied first and
    given a copy of `home`'s files; what it creates, changes or deletes there is then done to
    `home`, so a test checks `home` afterwards as it would after a subprocess. Messages name the
    scratch home's paths, not `home`'s: pin file names, or use `run_front_end` for a full path.
    """
    import amalgam

    scratch = amalgam.PROJECT_ROOT
    if not scratch.name.startswith(SCRATCH_PREFIX):  # never empty a home that is not ours
        raise RuntimeError(f"run_in_process needs tests/conftest.py's scratch home, not {scratch}")
    shutil.rmtree(scratch, ignore_errors=True)
    if home is not None and home.is_dir():
        shutil.copytree(home, scratch, symlinks=True)
    scratch.mkdir(parents=True, exist_ok=True)
    before = _listing(scratch)
    result = _run_app(script, args)
    if home is not None:
        _mirror_changes(scratch, before, home)
    return result


def _run_app(script: str, args: list[str]) -> subprocess.CompletedProcess:
    from typer.testing import CliRunner

    from amalgam.cli import eval_cli, train_cli
    from amalgam.cli.common import run_cli

    app = {"train.py": train_cli.app, "evaluation.py": eval_cli.app}[script]
    saved_argv, code = sys.argv, 0
    # CliRunner's isolation swaps stdin/stdout/stderr for buffers, as a pipe would be
    with CliRunner().isolation() as (stdout, stderr, _):
        sys.argv = [script, *args]  # Click reads the arguments and the program name from here
        try:
            run_cli(app)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        finally:
            sys.argv = saved_argv
            sys.stdout.flush()
            sys.stderr.flush()
        out, err = stdout.getvalue().decode(), stderr.getvalue().decode()
    return subprocess.CompletedProcess([script, *args], code, out, err)


def _listing(root: Path) -> dict[Path, tuple[int, int] | None]:
    """Every path under root: (size, mtime) for a file, None for a folder."""
    return {
        path.relative_to(root): None if path.is_dir() else (path.stat().st_size, path.stat().st_mtime_ns)
        for path in root.rglob("*")
    }


def _mirror_changes(scratch: Path, before: dict[Path, tuple[int, int] | None], home: Path) -> None:
    after = _listing(scratch)
    for rel in sorted(set(before) - set(after), reverse=True):  # files before their folders
        gone = home / rel
        shutil.rmtree(gone) if gone.is_dir() else gone.unlink(missing_ok=True)
    for rel, stamp in sorted(after.items()):
        if rel in before and before[rel] == stamp:
            continue
        target = home / rel
        if stamp is None:
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(scratch / rel, target)


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
