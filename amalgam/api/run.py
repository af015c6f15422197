"""`amalgam.distil`: the CLI's distillation run, fed with modules and Datasets instead of files.

Both end in `amalgam.distill.runs.run.distil` with task data, teachers and settings; this module
only turns what a notebook holds into those. The run folder is the CLI's (config.json,
history.json, best.*, last.*, last_state.pt), so `train.py export RUN` and
`evaluation.py --task TASK.toml --checkpoint RUN/best` work on it. config.json records the task
as `in-memory:<name>` with the roster (teacher → classes): the teachers' weights and the data
are not saved, so a stopped run is resumed from Python, with the same teachers and data again:
`amalgam.distil(teachers, classes, train, val, resume=RUN)`; `train.py --resume RUN` says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch.nn as nn

from amalgam import PROJECT_ROOT
from amalgam.api.data import to_image_set
from amalgam.api.teachers import Teacher, given_teachers, reuses_teacher_heads, teacher_specs
from amalgam.distill.engine.devices import resolve_device
from amalgam.distill.engine.label_modes import LABEL_FREE, LABEL_MODES
from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.methods import DEFAULT_METHOD, METHODS, MethodOptions, build_method
from amalgam.distill.runs.folders import write_json
from amalgam.distill.runs.recipes import recipe_defaults
from amalgam.distill.runs.run import distil as run_distil
from amalgam.distill.runs.saving import load_best
from amalgam.distill.runs.settings import IN_MEMORY_TASK, DistilSettings, read_settings
from amalgam.distill.runs.state import SavedRun, load_state
from amalgam.distill.teachers.given import GivenTeachers
from amalgam.errors import UserError, one_of
from amalgam.models.model_input import ModelInput
from amalgam.models.students import DEFAULT_STUDENT, canonical_student
from amalgam.tasks.images import stratified_split
from amalgam.tasks.loader import SPLIT_SEED, TaskData, channel_stats, check_every_class_trains
from amalgam.tasks.roster_draw import roster_record
from amalgam.tasks.spec import MIN_STUDENT_SIZE, DataSpec, TaskSpec
from amalgam.ui import say

# the methods chosen when none is named: the CLI's default, or its logit-only part when a
# teacher has no feature map; under labels="none" their label-free counterparts
DEFAULT_METHODS = {("train", True): DEFAULT_METHOD, ("train", False): "uhc-kd",
                   ("none", True): "fitnet+amalgam-kd", ("none", False): "amalgam-kd"}
RUN_OPTIONS = ("img_size", "val_fraction", "pretrained", "run_name", "checkpoint_every", "log")
IN_MEMORY_DATA = "in-memory"
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass
class DistilResult:
    """A finished run: the student at its validation-chosen epoch (eval mode) and where it lives."""

    student: nn.Module
    run_dir: Path
    history: list[dict]
    scores: dict  # the chosen epoch's row: epoch, val_acc, val_macro_f1, val_loss
    model_input: ModelInput  # how the student wants its images (size, normalisation)
    classes: tuple[str, ...]
    method: str

    @property
    def val_acc(self) -> float:
        return float(self.scores["val_acc"])

    @property
    def val_macro_f1(self) -> float:
        return float(self.scores["val_macro_f1"])


def distil(
    teachers: Sequence[Teacher],
    classes: Sequence[str],
    train: Any,
    val: Any | None = None,
    student: str = DEFAULT_STUDENT,
    method: str | None = None,
    labels: str = "train",
    epochs: int | None = None,
    out: str | Path | None = None,
    *,
    task: str = "in-memory",
    resume: str | Path | None = None,
    root: Path | None = None,
    **options: Any,
) -> DistilResult:
    """Distil one `student` (any timm name) over `classes` from partial `teachers`.

    `train`/`val` are Datasets of `(image, label)` or images alone (labels: ints into `classes`),
    or Hugging Face image datasets; `val=None` holds out `val_fraction` (0.1) of `train` per class.
    `labels="none"` trains with a loss that reads no training label (validation labels still
    choose the epoch). `method=None` takes the CLI's default recipe (configs/default.toml, or
    configs/label-free.toml with `labels="none"`) for every setting not given, with the recipe's
    logit-only method if a teacher has no feature map (one line says so). `options` are the CLI's
    flags as keywords:
    batch_size, lr, seed, augment, device ("auto"), quiet, temperature, alpha, img_size, … .
    The run folder is `out` (default runs/<time>_task_<task>); `resume=RUN` continues a stopped
    run with the same teachers and data (`epochs` may raise its total). The teachers' output
    cache goes under `root` (default: $AMALGAM_HOME, else the working directory). Mistakes raise
    UserError.
    """
    root = Path(root) if root is not None else PROJECT_ROOT
    classes = tuple(classes)
    if not TASK_NAME.fullmatch(task):
        raise UserError(f"task={task!r} is not a plain name; use letters, digits, '.', '_' and '-' "
                        "(it names the run's and the cache's folders)")
    specs = teacher_specs(teachers, classes)
    if resume is not None:
        settings = read_settings(Path(resume))
        changed = sorted(set(options) - {"quiet"})
        if changed:
            raise UserError(f"resume continues {resume} as its config.json says; only epochs and quiet may "
                            f"change, not {changed}")
        if not settings.task.startswith(IN_MEMORY_TASK):
            raise UserError(f"{resume} is a run of task {settings.task!r} started from the command line; "
                            f"resume it with `python train.py --resume {resume}`")
        task, labels = settings.task.removeprefix(IN_MEMORY_TASK), settings.train.labels
    else:
        if method is None:
            options, epochs = with_recipe(labels, options, epochs)
        settings = new_settings(task, student, labels, epochs, options)
    if labels not in LABEL_MODES:
        raise UserError(f"labels must be {one_of(LABEL_MODES)}, got {labels!r}")
    data = task_data(task, classes, specs, train, val, labels, settings.val_fraction)
    given = given_teachers(teachers, specs, data.train, (data.mean, data.std))
    if resume is not None:
        return resume_run(Path(resume), settings, data, given, epochs, options.get("quiet"), root)
    settings = replace(settings, method=choose_method(method, labels, data.spec, given, settings))
    result = run_distil(settings, Path(out) if out is not None else None, root, data, given=given)
    return finished(result, settings, data)


def with_recipe(labels: str, options: dict, epochs: int | None) -> tuple[dict, int | None]:
    """With no method named, the recipe `python train.py` runs (amalgam/distill/runs/recipes.py)
    fills in every setting the caller did not give, as on the command line."""
    given = set(options) | ({"epochs"} if epochs is not None else set())
    values = {k: v for k, v in recipe_defaults(labels, given).items() if k not in ("method", "labels")}
    epochs = values.pop("epochs", epochs)
    return {**values, **options}, epochs


def new_settings(task: str, student: str, labels: str, epochs: int | None, options: dict) -> DistilSettings:
    """The run's settings from keyword options, each checked by the class that owns it."""
    train_names = {f.name for f in fields(TrainConfig)}
    method_names = {f.name for f in fields(MethodOptions)}
    unknown = sorted(set(options) - train_names - method_names - set(RUN_OPTIONS))
    if unknown:
        known = sorted(train_names | method_names | set(RUN_OPTIONS))
        raise UserError(f"unknown option(s) {unknown}; amalgam.distil takes {', '.join(known)}")
    train = {k: v for k, v in options.items() if k in train_names}
    train.update(labels=labels, device=resolve_device(str(train.get("device", "auto"))))
    if epochs is not None:
        train["epochs"] = epochs
    run = {k: options[k] for k in RUN_OPTIONS if k in options}
    return DistilSettings(
        task=IN_MEMORY_TASK + task, student=canonical_student(student), method=DEFAULT_METHOD,
        method_options=MethodOptions(**{k: v for k, v in options.items() if k in method_names}),
        train=TrainConfig(**train), **run,
    )


def task_data(
    task: str, classes: tuple[str, ...], specs, train: Any, val: Any | None, labels: str, val_fraction: float,
) -> TaskData:
    """The task and its splits, as `load_task_data` makes them from files. With no `val`, the
    validation part is carved from `train` per class, with the CLI's fixed split seed."""
    labeled = labels != LABEL_FREE
    train_set = to_image_set(train, classes, "train", labeled,
                             "labels='train' trains on them (pass labels='none' for a label-free method)")
    if val is not None:
        val_set = to_image_set(val, classes, "val", True, "validation reads labels to choose the epoch",
                               like=train_set)
    elif bool((train_set.labels < 0).any()):
        raise UserError("the train Dataset has images without labels and no val Dataset was given; "
                        "pass val= a Dataset of (image, label): validation chooses the epoch")
    else:
        keep, held = stratified_split(train_set.labels, val_fraction, SPLIT_SEED)
        train_set, val_set = train_set.subset(keep), train_set.subset(held)
        if len(val_set) == 0:
            raise UserError("no class of train has two images to hold one out for validation; "
                            "pass val= a Dataset of (image, label)")
    size = int(train_set.images.shape[-1])
    spec = TaskSpec(task, classes, tuple(specs), DataSpec(IN_MEMORY_DATA), img_size=size, channels=3,
                    source="python", student_img_size=max(size, MIN_STUDENT_SIZE))
    if labeled:
        check_every_class_trains(train_set, spec)
    mean, std = channel_stats(train_set.images, 3)
    return TaskData(spec, train_set, val_set, val_set, mean, std)


def choose_method(
    name: str | None, labels: str, spec: TaskSpec, given: GivenTeachers, settings: DistilSettings
) -> str:
    """The method to run: `name`, refused with a reason when a teacher cannot serve it, or the
    default that every teacher can serve."""
    without = [t.name for t, ok in zip(spec.teachers, given.with_features, strict=True) if not ok]
    if name is None:
        name = DEFAULT_METHODS[labels, not without]
        if without:
            say(f"note: teacher(s) {without} have no 4-D activation to read features from; "
                f"training {name}, a logit-only method")  # even when quiet: not the default method
        return name
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; use {one_of(sorted(METHODS))}")
    method = build_method(name, spec.roster(), settings.method_options)
    if without and method.uses_teachers and (method.needs_features or method.fit_reads_features):
        logit_only = [n for n, f in METHODS.items() if f.uses_teachers and not f.needs_features]
        raise UserError(f"method {name!r} reads the teachers' feature maps, but teacher(s) {without} have "
                        f"no 4-D activation; use a logit-only method: {', '.join(logit_only)}")
    hooked = [t.name for t, own in zip(spec.teachers, given.reuses_heads, strict=True) if not own]
    if hooked and method.uses_teachers and reuses_teacher_heads(method):
        raise UserError(f"method {name!r} reuses each teacher's classifier on the student's features, but "
                        f"teacher(s) {hooked} have no forward_features/forward_head; give them timm's split "
                        "or use another method")
    return name


def resume_run(
    run_dir: Path, settings: DistilSettings, data: TaskData, given: GivenTeachers, epochs: int | None,
    quiet: bool | None, root: Path,
) -> DistilResult:
    """Continue a stopped in-memory run; its teachers must be the roster config.json records."""
    recorded = json_roster(run_dir)
    if recorded is not None and recorded != roster_record(data.spec):
        raise UserError(f"the teachers given are not {run_dir}'s: it was trained from {recorded}; "
                        "pass the same teachers and classes")
    saved = SavedRun(run_dir, load_state(run_dir))
    overrides = {k: v for k, v in (("epochs", epochs), ("quiet", quiet)) if v is not None}
    if overrides:  # as `train.py --resume RUN --epochs N` does
        settings = replace(settings, train=replace(settings.train, **overrides))
        write_json(run_dir / "config.json", settings.record(data.spec))
    result = run_distil(settings, root=root, data=data, resume_from=saved, given=given)
    return finished(result, settings, data)


def json_roster(run_dir: Path) -> dict | None:
    return json.loads((run_dir / "config.json").read_text()).get("roster")


def finished(result, settings: DistilSettings, data: TaskData) -> DistilResult:
    trainer = result.trainer
    load_best(trainer, result.run_dir)
    return DistilResult(trainer.student.eval(), result.run_dir, result.history, result.best,
                        trainer.student_input, data.spec.classes, settings.method)
