"""The CAS771 teachers people already have: the reference app's own files under weights/.

The reference app loads its teachers from `weights/A/data<k>_<acc>_epoch<n>.pth` and
`weights/B/…` (k = 1, 2, 3: bare state_dicts of its teacher CNN, e.g.
`weights/B/data1_86.40_epoch182.pth`). When such files sit under the project home
(`$AMALGAM_HOME`, else the working directory), the built-in tasks A and B use them as their
teachers, so `train.py teachers --task B` is needed only for a teacher without one. Files are
matched by pattern, not by the accuracy and epoch in their names, which differ between
trainings; two files for one teacher are an error naming both rather than a silent choice.

This is applied where a built-in task is looked up (`get_task`), so everything downstream
(loading, the teacher cache's key, `train.py teachers`, `train.py tasks`) sees the same
teachers: format "cas771", checkpoint = the file found.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import amalgam
from amalgam.errors import UserError
from amalgam.tasks.architectures import CAS771_CNN
from amalgam.tasks.spec import CAS771_FORMAT, TaskSpec

WEIGHTS_DIR = "weights"
CAS771_TASKS = ("A", "B")  # the built-in tasks whose teachers the reference app trained


def weights_folder(spec: TaskSpec, root: Path) -> Path:
    """Where the reference app keeps the task's teachers: <root>/weights/<A|B>."""
    return Path(root) / WEIGHTS_DIR / spec.name


def teacher_file_pattern(k: int) -> str:
    """The file name of teacher k in the reference app's layout, accuracy and epoch left open."""
    return f"data{k}_*_epoch*.pth"


def reference_teacher_files(spec: TaskSpec, root: Path) -> dict[str, Path]:
    """Teacher name → its reference-app file, for the teachers that have exactly one."""
    folder = weights_folder(spec, root)
    if spec.source != "built-in" or spec.name not in CAS771_TASKS or not folder.is_dir():
        return {}
    found = {}
    for k, teacher in enumerate(spec.teachers, start=1):
        matches = sorted(path for path in folder.glob(teacher_file_pattern(k)) if path.is_file())
        if len(matches) > 1:
            names = ", ".join(path.name for path in matches)
            raise UserError(
                f"{folder} holds {len(matches)} files for teacher {k} ({names}); keep one "
                f"(the reference app loads one {teacher_file_pattern(k)} per teacher)"
            )
        if matches:
            found[teacher.name] = matches[0]
    return found


def with_reference_teachers(spec: TaskSpec, root: Path | None = None) -> TaskSpec:
    """The task with each teacher that has a reference-app file under weights/ reading that file."""
    files = reference_teacher_files(spec, Path(root) if root is not None else amalgam.PROJECT_ROOT)
    if not files:
        return spec
    teachers = tuple(
        replace(teacher, arch=CAS771_CNN, checkpoint=str(files[teacher.name]), format=CAS771_FORMAT)
        if teacher.name in files else teacher
        for teacher in spec.teachers
    )
    return replace(spec, teachers=teachers)
