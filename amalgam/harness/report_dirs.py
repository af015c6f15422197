"""Where a grading's reports go: one folder per graded student, and a pointer to the newest.

`evaluation/<task>/<student>/` holds results.json and the three plots of one student, so
grading another student never replaces them; `evaluation/<task>/latest.json` names the
folder of the newest grading. Grading the same student again refreshes its own folder. A
folder or pointer this code did not write is never written into or replaced.
"""

from __future__ import annotations

import contextlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path

from amalgam.errors import UserError
from amalgam.models.checkpoint import atomic_write_bytes

LATEST_FILE = "latest.json"
LATEST_FORMAT = "amalgam-latest-report/1"
RESULTS_FILE = "results.json"
REPORT_FILES = frozenset({RESULTS_FILE, "sample_predictions.png", "confusion_matrix.png", "reliability.png"})
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MODEL_SUFFIXES = (".safetensors", ".json", ".pth", ".pt", ".onnx")


def report_name(student_path: Path) -> str:
    """A folder name a person recognises: the run's name for a run's checkpoint (plus the file
    when it is not `best`), else the file's name without its model suffix."""
    path = Path(student_path)
    name = path.name
    for suffix in _MODEL_SUFFIXES:
        name = name.removesuffix(suffix)
    if (path.parent / "config.json").is_file():  # a run folder: its name is what people know
        name = path.parent.name if name == "best" else f"{path.parent.name}-{name}"
    name = _UNSAFE.sub("_", name).strip("._-")[:120]
    return name or "student"


def _holds_reports_of(folder: Path, model_path: str) -> bool:
    """True when folder is empty, or one this code wrote for this very student (so it may be
    refreshed without losing anything else)."""
    entries = list(folder.iterdir())
    if not entries:
        return True
    if any(not p.name.startswith(".") and p.name not in REPORT_FILES for p in entries):
        return False
    try:
        graded = json.loads((folder / RESULTS_FILE).read_text()).get("model_path")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(graded, str) and Path(graded).resolve() == Path(model_path).resolve()


def claim_report_dir(task_root: Path, student_path: Path) -> Path:
    """The folder for this student's reports under task_root: its own from an earlier grading,
    else a new one (`name`, `name-2`, …), never one holding something else."""
    check_latest_is_ours(task_root)
    base = report_name(student_path)
    for n in range(1, 1000):
        folder = task_root / (base if n == 1 else f"{base}-{n}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            if folder.is_dir() and _holds_reports_of(folder, str(student_path)):
                return folder
        except NotADirectoryError as exc:
            raise UserError(
                f"cannot write reports under {task_root}: {exc.filename} is a file; pass another --out"
            ) from exc
    raise UserError(f"{task_root} already holds 999 folders named {base}*; pass another --out")


def discard_unfinished(report_dir: Path) -> None:
    """Remove a new report folder whose grading failed before results.json (a full disk half-way
    through the plots), and its task folder if that is left empty: nothing half-written stays."""
    with contextlib.suppress(OSError):  # called while another error propagates: never mask it
        for entry in report_dir.iterdir():
            if entry.name in REPORT_FILES or (entry.name.startswith(".") and entry.name.endswith(".tmp")):
                entry.unlink()
        report_dir.rmdir()  # fails, harmlessly, when something else is in it
        report_dir.parent.rmdir()


def check_latest_is_ours(task_root: Path) -> None:
    """Refuse, before any work, to replace a latest.json that this code did not write."""
    pointer = task_root / LATEST_FILE
    if not pointer.exists() and not pointer.is_symlink():
        return
    try:
        ours = json.loads(pointer.read_text()).get("format") == LATEST_FORMAT
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours or pointer.is_symlink():
        raise UserError(f"{pointer} was not written by amalgam and would be replaced; "
                        "move it away or pass another --out")


def point_latest(task_root: Path, report_dir: Path, results: dict) -> Path:
    """Record report_dir as the newest grading of the task."""
    check_latest_is_ours(task_root)
    pointer = {
        "format": LATEST_FORMAT,
        "report": report_dir.name,
        "results": f"{report_dir.name}/{RESULTS_FILE}",
        "model_path": results.get("model_path"),
        "overall_accuracy": results.get("overall_accuracy"),
        "graded_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    text = json.dumps(pointer, indent=2) + "\n"
    atomic_write_bytes(task_root / LATEST_FILE, lambda p: p.write_text(text))
    return task_root / LATEST_FILE


def latest_report_dir(task_root: Path) -> Path:
    """The folder of the task's newest grading, as latest.json names it."""
    pointer = task_root / LATEST_FILE
    try:
        name = json.loads(pointer.read_text())["report"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"no grading recorded in {pointer}; run `python evaluation.py --task …`") from exc
    return task_root / name
