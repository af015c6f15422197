"""User-defined tasks: a task.toml describes classes, teachers and data without any code.

The file is checked strictly, once, here: unknown keys (usually typos) and wrong types are
errors naming the file and the key, because a mistake that slips through surfaces much later
as a confusing failure in training. Relative paths are relative to the toml file, so a task
folder can be moved or shared as a whole. See docs/task-toml.md for complete examples.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Any

from amalgam.errors import UserError, one_of
from amalgam.tasks.architectures import CAS771_CNN, COMPACT_CNNS, is_teacher_arch
from amalgam.tasks.spec import (
    CAS771_FORMAT,
    FORMAT_ALIASES,
    MIN_STUDENT_SIZE,
    TEACHER_FORMATS,
    DataSpec,
    TaskSpec,
    TeacherSpec,
)

TOP_KEYS = {"name", "classes", "img_size", "student_img_size", "channels", "mean", "std", "description",
            "teacher", "data"}
TEACHER_KEYS = {"name", "classes", "arch", "checkpoint", "format"}
DATA_KEYS = {
    "folder": {"kind", "root", "train", "test", "val", "unlabeled"},
    "cas771-pth": {"kind", "root", "files", "original_labels", "unlabeled"},
}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class _Reader:
    """Typed access to one table; every complaint names the file, the table and the key."""

    def __init__(self, table: dict[str, Any], path: Path, where: str = ""):
        self.table, self.path, self.where = table, path, where

    def fail(self, key: str, problem: str) -> UserError:
        return UserError(f"{self.path}: {self.where}key '{key}' {problem}")

    def check_keys(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.table) - allowed)
        if unknown:
            raise self.fail(unknown[0], f"is not known here; allowed keys are {', '.join(sorted(allowed))}")

    def has(self, key: str) -> bool:
        return key in self.table

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None,
            required: bool = False) -> Any:
        if key not in self.table:
            if required:
                raise self.fail(key, "is missing; add it")
            return default
        value = self.table[key]
        if not isinstance(value, kind) or isinstance(value, bool) and bool not in _as_tuple(kind):
            names = " or ".join(t.__name__ for t in _as_tuple(kind))
            raise self.fail(key, f"must be {names}, got {type(value).__name__} {value!r}")
        return value

    def text(self, key: str, default: str | None = None, required: bool = False) -> str | None:
        value = self.get(key, str, default, required)
        if value is not None and not value.strip() and (required or key in self.table):
            raise self.fail(key, "must not be empty")
        return value

    def names(self, key: str) -> tuple[str, ...]:
        value = self.get(key, list, required=True)
        if not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.fail(key, "must be a non-empty list of class names (strings)")
        return tuple(value)

    def floats(self, key: str, length: int) -> list[float] | None:
        value = self.get(key, list)
        if value is None:
            return None
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                      for v in value)
        if len(value) != length or not numbers:
            raise self.fail(key, f"must be a list of {length} finite numbers "
                                 "(one per channel, in [0, 1] units)")
        if key == "std" and any(v <= 0 for v in value):
            raise self.fail(key, "must be positive")
        return [float(v) for v in value]

    def table_of(self, key: str, required: bool = False) -> dict[str, Any]:
        return self.get(key, dict, {}, required)


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _resolve(base: Path, value: str, reader: _Reader, key: str) -> str:
    try:
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())
    except (ValueError, RuntimeError, OSError) as exc:
        raise reader.fail(key, f"is not a usable path ({exc})") from exc


def _teachers(doc: _Reader, base: Path) -> tuple[TeacherSpec, ...]:
    tables = doc.get("teacher", list, required=True)
    if not tables:
        raise doc.fail("teacher", "needs at least one [[teacher]] table")
    teachers = []
    for i, table in enumerate(tables, start=1):
        if not isinstance(table, dict):
            raise doc.fail("teacher", "must hold [[teacher]] tables")
        label = f"teacher {table['name']!r}" if isinstance(table.get("name"), str) else f"teacher #{i}"
        t = _Reader(table, doc.path, f"{label}: ")
        t.check_keys(TEACHER_KEYS)
        name = t.text("name", required=True)
        if not _NAME.fullmatch(name):
            raise t.fail("name", f"{name!r} may only use letters, digits, '.', '_' and '-'")
        fmt = t.text("format", "amalgam")
        fmt = FORMAT_ALIASES.get(fmt, fmt)
        if fmt not in TEACHER_FORMATS:
            raise t.fail("format", f"is {fmt!r}; use one of {', '.join(TEACHER_FORMATS)} "
                                   f"(or {', '.join(FORMAT_ALIASES)}, the same as {CAS771_FORMAT})")
        arch = t.text("arch", CAS771_CNN if fmt == CAS771_FORMAT else "cnn-small")
        if fmt == CAS771_FORMAT and arch != CAS771_CNN:
            raise t.fail("arch", f"is {arch!r}, but {CAS771_FORMAT}-format teachers are the reference "
                                 f"app's CNN; use \"{CAS771_CNN}\"")
        _check_arch(t, arch)
        checkpoint = t.text("checkpoint")
        if fmt == CAS771_FORMAT and checkpoint is None:
            raise t.fail("checkpoint", f"is required with format = \"{CAS771_FORMAT}\" "
                                       "(the reference app's .pth file)")
        teachers.append(TeacherSpec(name, t.names("classes"), arch,
                                    _resolve(base, checkpoint, t, "checkpoint") if checkpoint else None, fmt))
    return tuple(teachers)


def _check_arch(t: _Reader, arch: str) -> None:
    if not is_teacher_arch(arch):
        raise t.fail("arch", f"{arch!r} is not a teacher architecture; use {one_of(sorted(COMPACT_CNNS))}, "
                             f"{CAS771_CNN} or a timm model name")


def _data(doc: _Reader, base: Path, teachers: tuple[TeacherSpec, ...], classes: tuple[str, ...]) -> DataSpec:
    d = _Reader(doc.table_of("data", required=True), doc.path, "[data] ")
    kind = d.text("kind", required=True)
    if kind not in DATA_KEYS:
        raise d.fail("kind", f"is {kind!r}; use one of {', '.join(DATA_KEYS)}")
    d.check_keys(DATA_KEYS[kind])
    root = _resolve(base, d.text("root", "."), d, "root")
    if kind == "folder":
        options = {split: d.text(split, required=split != "val") for split in ("train", "test", "val")}
        return DataSpec("folder", root, {k: v for k, v in options.items() if v is not None})
    files_table = d.table_of("files", required=True)
    names = [t.name for t in teachers]
    unknown = sorted(set(files_table) - set(names))
    if unknown:
        raise d.fail(f"files.{unknown[0]}", f"names no teacher; use the teacher names {names}")
    files = []
    for name in names:
        if name not in files_table:
            raise d.fail(f"files.{name}", "is missing; give each teacher { train = \"…\", test = \"…\" }")
        entry = _Reader(files_table[name], doc.path, f"[data.files.{name}] ") if isinstance(
            files_table[name], dict) else None
        if entry is None:
            raise d.fail(f"files.{name}", "must be a table { train = \"…\", test = \"…\" }")
        entry.check_keys({"train", "test"})
        files.append({split: entry.text(split, required=True) for split in ("train", "test")})
    options: dict[str, Any] = {"files": files, "original_labels": None}
    if d.has("original_labels"):
        table = d.table_of("original_labels")
        for name, label in table.items():
            if name not in classes:
                raise d.fail(f"original_labels.{name}",
                             f"is not a class of the task; use names from {list(classes)}")
            if not isinstance(label, int) or isinstance(label, bool):
                raise d.fail(f"original_labels.{name}", "must be an integer label")
        missing = [c for c in classes if c not in table]
        if missing:
            raise d.fail("original_labels", f"has no label for class(es) {missing}")
        if len(set(table.values())) != len(table):
            raise d.fail("original_labels", "gives two classes the same label")
        options["original_labels"] = dict(table)
    return DataSpec("cas771-pth", root, options)


def _unlabeled(doc: _Reader, base: Path) -> str | None:
    """`[data] unlabeled`: an image folder or .pth of images without labels, relative to the
    task file (like `root`; `--data-dir` does not move it). Read by amalgam/tasks/unlabeled.py."""
    d = _Reader(doc.table_of("data"), doc.path, "[data] ")
    value = d.text("unlabeled")
    return None if value is None else _resolve(base, value, d, "unlabeled")


def _read_toml(path: Path) -> dict[str, Any]:
    """The parsed file; a UTF-8 byte-order mark is accepted, any other encoding named."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"task file {path} does not exist; check the path") from None
    except OSError as exc:
        raise UserError(f"cannot read task file {path} ({exc.strerror or exc})") from exc
    try:
        text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                        "save it as UTF-8") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path} is not valid TOML ({exc}); fix the syntax") from exc


def load_task_file(path: Path, reserved_names: Collection[str] = ()) -> TaskSpec:
    """Parse and validate a task.toml into a TaskSpec; its name may not be one of `reserved_names`
    (the built-in tasks' names, which `amalgam.tasks.builtin.load_task_toml` passes)."""
    path = Path(path).expanduser()
    raw = _read_toml(path)
    doc = _Reader(raw, path)
    doc.check_keys(TOP_KEYS)
    name = doc.text("name", required=True)
    if not _NAME.fullmatch(name):
        raise doc.fail("name", f"{name!r} may only use letters, digits, '.', '_' and '-' (it names folders)")
    if name in reserved_names:
        raise doc.fail("name", f"{name!r} is a built-in task's name; choose another")
    classes = doc.names("classes")
    img_size, student_img_size = doc.get("img_size", int, 32), doc.get("student_img_size", int)
    for key, size in (("img_size", img_size), ("student_img_size", student_img_size)):
        if size is not None and not 8 <= size <= 1024:
            raise doc.fail(key, f"is {size}; use 8 to 1024 pixels")
    channels = doc.get("channels", int, 3)
    if channels not in (1, 3):
        raise doc.fail("channels", f"is {channels}; use 1 (grayscale) or 3 (colour)")
    base = path.resolve().parent
    teachers = _teachers(doc, base)
    data = _data(doc, base, teachers, classes)
    unlabeled = _unlabeled(doc, base)
    if unlabeled is not None:
        data.options["unlabeled"] = unlabeled
    for key in ("mean", "std"):
        stats = doc.floats(key, channels)
        if stats is not None:
            data.options[key] = stats
    if doc.has("mean") != doc.has("std"):
        raise doc.fail("std" if doc.has("mean") else "mean", "is missing; give mean and std together")
    if student_img_size is None:  # a small image is upsampled for the student, as on `fashion`
        student_img_size = max(img_size, MIN_STUDENT_SIZE)
    try:
        return TaskSpec(name, classes, teachers, data, img_size=img_size, channels=channels,
                        description=doc.text("description", "") or "", source=str(path),
                        student_img_size=student_img_size)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from exc
