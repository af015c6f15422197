"""`python train.py tasks`: list the built-in tasks, or check a task.toml and show its roster.

Checking prints which classes several teachers share, because overlaps decide how the
teachers' answers are combined and are the first thing to get wrong in a hand-written roster.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

import amalgam
from amalgam.tasks.builtin import builtin_tasks, load_task_toml
from amalgam.tasks.spec import TaskSpec, resolve_checkpoint_stem
from amalgam.ui import console


def class_overlaps(spec: TaskSpec) -> dict[str, list[str]]:
    """Each class that more than one teacher covers → those teachers, in roster order."""
    owners: dict[str, list[str]] = {c: [] for c in spec.classes}
    for teacher in spec.teachers:
        for name in teacher.classes:
            owners[name].append(teacher.name)
    return {c: names for c, names in owners.items() if len(names) > 1}


def data_paths(spec: TaskSpec) -> list[Path]:
    """The files or folders a task reads, so a check can say which are not there yet."""
    root = Path(spec.data.root or ".")
    root = root if root.is_absolute() else amalgam.PROJECT_ROOT / root
    options = spec.data.options
    if spec.data.kind == "folder":
        return [root / options[split] for split in ("train", "test", "val") if split in options]
    if spec.data.kind == "cas771-pth":
        return [root / entry[split] for entry in options.get("files", []) for split in ("train", "test")]
    return []


def _sizes(spec: TaskSpec) -> str:
    if spec.student_input_size == spec.img_size:
        return str(spec.img_size)
    return f"{spec.img_size} / {spec.student_input_size}"


def print_builtin_tasks() -> None:
    table = Table(title="built-in tasks (or pass --task path/to/task.toml)")
    for column in ("name", "classes", "teachers", "img size (teachers / student)", "description"):
        table.add_column(column)
    for name, spec in builtin_tasks().items():
        table.add_row(name, str(spec.num_classes), str(len(spec.teachers)), _sizes(spec), spec.description)
    console.print(table)


def print_roster(spec: TaskSpec) -> None:
    console.print(f"{spec.source}: valid task {spec.name!r}, {spec.num_classes} classes, "
                  f"{len(spec.teachers)} teachers, {_sizes(spec)} px, {spec.channels} channel(s), "
                  f"data kind {spec.data.kind}", markup=False)
    table = Table(title=f"roster of task {spec.name}")
    for column in ("teacher", "arch", "format", "classes (local order)"):
        table.add_column(column, overflow="fold")
    for teacher in spec.teachers:
        table.add_row(teacher.name, teacher.arch, teacher.format, ", ".join(teacher.classes))
    console.print(table)
    for teacher in spec.teachers:  # paths on their own lines: a narrow column would cut them
        checkpoint = resolve_checkpoint_stem(spec, teacher, amalgam.PROJECT_ROOT)
        console.print(f"{teacher.name} checkpoint: {checkpoint}", markup=False, highlight=False)
    overlaps = class_overlaps(spec)
    if overlaps:
        for name, teachers in overlaps.items():
            console.print(f"shared class {name!r}: {', '.join(teachers)}", markup=False)
    else:
        console.print("no class is shared: every class has exactly one teacher")
    for path in data_paths(spec):
        if not path.exists():
            console.print(f"warning: {path} does not exist yet", style="yellow", markup=False)


def tasks_command(
    check: Path | None = typer.Option(None, "--check", help="validate this task.toml and show its roster"),
) -> None:
    """List the built-in tasks, or validate a task.toml (--check FILE) and print its roster."""
    if check is None:
        print_builtin_tasks()
        return
    print_roster(load_task_toml(check))
