"""Size and CPU speed of a run's teachers and its student: what shipping one student saves.

Latency is per image (batches of one, the deployment case for a single request), on one
CPU thread, as the median of several timed calls after a warm-up. One thread because a
single small image gains little from more, and on a shared machine a multi-threaded run
waits on busy cores, which can make it slower by orders of magnitude.
The median drops one-off allocation and a neighbour's spikes. Numbers are machine-specific.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from rich.table import Table

from amalgam import PROJECT_ROOT
from amalgam.distill.teachers.loading import load_teachers
from amalgam.errors import UserError
from amalgam.harness.evaluate import LoadedStudent
from amalgam.models.checkpoint import atomic_write_bytes, checkpoint_files, checkpoint_stem, load_model
from amalgam.models.export import (
    export_student,
    is_exported_file,
    load_exported,
    read_export_metadata,
    resolve_source,
)
from amalgam.models.model_input import model_input_for
from amalgam.ui import console, say

REPORT_FILE = "model_report.json"
THREADS = 1


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def weights_file(path: Path) -> Path:
    """The file holding a model's weights: the path itself, or a checkpoint stem's .safetensors."""
    path = Path(path)
    return path if path.is_file() else checkpoint_files(checkpoint_stem(path))[0]


def load_for_report(path: Path) -> LoadedStudent:
    """Any model file we write (checkpoint stem, .onnx, TorchScript .pt), classes unchecked."""
    if is_exported_file(path):
        predictor, model_input, params = load_exported(path, threads=THREADS)
        return LoadedStudent(predictor, model_input, Path(path), params)
    model, card = load_model(path)
    params = sum(p.numel() for p in model.parameters())
    return LoadedStudent(model, model_input_for(card), checkpoint_stem(path), params)


def latency_ms_per_image(model: LoadedStudent, warmup: int = 3, repeats: int = 15) -> float:
    """Median wall time of one single-image forward pass on one CPU thread, in milliseconds."""
    shape = (1, model.model_input.in_chans, model.model_input.img_size, model.model_input.img_size)
    image = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    predict = model.predict.cpu().eval()
    timings = []
    with torch.inference_mode(), torch_threads(THREADS):
        for _ in range(warmup):
            predict(image)
        for _ in range(repeats):
            start = time.perf_counter()
            predict(image)
            timings.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(timings)


def model_sizes(models: dict[str, Path | LoadedStudent], warmup: int = 3, repeats: int = 15) -> list[dict]:
    """One row per model: parameters, weights-file size in bytes and CPU latency per image."""
    rows = []
    for name, entry in models.items():
        loaded = entry if isinstance(entry, LoadedStudent) else load_for_report(entry)
        weights = weights_file(loaded.path)
        rows.append({
            "name": name,
            "file": str(weights),
            "params": loaded.params,
            "file_bytes": weights.stat().st_size if weights.exists() else None,
            "img_size": loaded.model_input.img_size,
            "latency_ms_per_image": round(latency_ms_per_image(loaded, warmup, repeats), 3),
        })
    return rows


def teachers_of(task: str) -> dict[str, LoadedStudent]:
    """The task's teachers as loaded for distillation, named as in its roster."""
    from amalgam.tasks.builtin import get_task
    from amalgam.tasks.spec import resolve_checkpoint_stem

    spec = get_task(task)
    models, inputs, _ = load_teachers(spec)
    return {
        teacher.name: LoadedStudent(
            model, model_input, resolve_checkpoint_stem(spec, teacher, PROJECT_ROOT),
            sum(p.numel() for p in model.parameters()),
        )
        for teacher, model, model_input in zip(spec.teachers, models, inputs, strict=True)
    }


def run_task(stem: Path, home: Path) -> str:
    """The task as the run was started (a task.toml path survives here), else the card's name."""
    config = home / "config.json"
    if config.exists():
        try:
            return json.loads(config.read_text())["task"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            pass  # an unreadable config only costs us the teachers' rows
    return json.loads(checkpoint_files(stem)[1].read_text()).get("task", "")


def export_report(
    source: Path, exported: Path, warmup: int = 3, repeats: int = 15
) -> tuple[list[dict], list[str], Path]:
    """Measure the teachers, the PyTorch student and its exported file; save model_report.json."""
    stem, home = resolve_source(source)
    notes: list[str] = []
    models: dict[str, Path | LoadedStudent] = {}
    task = run_task(stem, home)
    if not task:
        notes.append("teachers skipped: the checkpoint records no task")
    else:
        try:
            models.update(teachers_of(task))
        except (UserError, OSError) as exc:
            notes.append(f"teachers skipped: {exc}")
    models["student (pytorch)"] = stem
    models[f"student ({exported.suffix.lstrip('.')})"] = exported
    rows = model_sizes(models, warmup, repeats)
    report = {
        "task": task,
        "models": rows,
        "notes": notes,
        "latency": f"median of {repeats} single-image calls on {THREADS} CPU thread after {warmup} warm-up",
    }
    target = home / REPORT_FILE
    text = json.dumps(report, indent=2)
    atomic_write_bytes(target, lambda p: p.write_text(text))
    return rows, notes, target


def print_model_report(rows: list[dict], notes: list[str]) -> None:
    table = Table(title=f"models: size and CPU latency per image ({THREADS} thread)")
    for column in ("model", "params", "file size", "input", "latency / image"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        size = "?" if row["file_bytes"] is None else f"{row['file_bytes'] / 1e6:.2f} MB"
        table.add_row(row["name"], f"{row['params'] / 1e6:.2f} M", size,
                      f"{row['img_size']} px", f"{row['latency_ms_per_image']:.2f} ms")
    console.print(table)
    for note in notes:
        console.print(note)


def export_and_report(source: Path, fmt: str, out: Path | None, report: bool) -> None:
    """`train.py export`: write the student as one file, then (optionally) measure and report it."""
    path = export_student(source, fmt, out)
    params = read_export_metadata(path)["params"]
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {params:,} params)")
    if report:
        rows, notes, saved = export_report(source, path)
        print_model_report(rows, notes)
        say(f"report in {saved}")
