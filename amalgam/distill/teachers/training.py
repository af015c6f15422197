"""Train each partial teacher on its own classes, into checkpoints/<task>/, never over a foreign file."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from amalgam import PROJECT_ROOT
from amalgam.distill.engine.batching import predict_logits
from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.engine.trainer import Trainer
from amalgam.distill.methods import MethodOptions, build_method
from amalgam.errors import UserError
from amalgam.models.checkpoint import FORMAT, ModelCard, checkpoint_files, checkpoint_stem, save_checkpoint
from amalgam.models.metrics import classification_scores
from amalgam.models.model_input import ModelInput
from amalgam.models.teacher_archs import create_teacher
from amalgam.tasks.builtin import get_task
from amalgam.tasks.loader import TaskData, load_task_data
from amalgam.tasks.spec import CAS771_FORMAT, Roster, TaskSpec, TeacherSpec, resolve_checkpoint_stem
from amalgam.tasks.teacher_recipes import DEFAULT_TEACHER_RECIPE, teacher_training_data, with_teacher_recipe
from amalgam.ui import say
from amalgam.writable import check_writable


@dataclass(frozen=True)
class TeacherReport:
    name: str
    classes: tuple[str, ...]
    checkpoint: Path
    val_accuracy: float
    test_accuracy: float


def train_teacher(
    data: TaskData, teacher: TeacherSpec, config: TrainConfig, img_size: int, root: Path
) -> TeacherReport:
    """Train on the teacher's classes only; keep the epoch with the best validation accuracy."""
    spec = data.spec
    train, val = data.for_teacher(teacher, "train"), data.for_teacher(teacher, "val")
    torch.manual_seed(config.seed)
    model = create_teacher(teacher.arch, len(teacher.classes))
    model_input = ModelInput(img_size, data.mean, data.std)
    roster = Roster.from_spec(spec)  # CE ignores it; methods share one constructor
    trainer = Trainer(
        model,
        build_method("ce", roster, MethodOptions()),
        model_input,
        train,
        val,
        len(teacher.classes),
        config,
    )
    best_state, best_acc = None, -1.0
    for _ in range(config.epochs):
        row = trainer.train_epoch()
        if row["val_acc"] > best_acc:
            best_acc, best_state = row["val_acc"], copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    test = data.for_teacher(teacher, "test")
    test_scores = classification_scores(
        predict_logits(model, model_input, test, trainer.device), test.labels, len(teacher.classes)
    )
    card = ModelCard(
        kind="teacher",
        arch=teacher.arch,
        classes=list(teacher.classes),
        img_size=img_size,
        mean=list(data.mean),
        std=list(data.std),
        task=spec.name,
        metrics={"val_accuracy": best_acc, "test_accuracy_own_classes": test_scores["accuracy"]},
        trained_on={
            "task": spec.name,
            "split": "train",
            "images": len(train),
            "epochs": config.epochs,
            "seed": config.seed,
            "teacher_folder": spec.teacher_folder,  # "" for today's recipe (teacher_recipes.py)
        },
    )
    target = trained_stem(spec, teacher, root)
    check_replaceable(target)  # again: a file may have appeared while it trained
    stem = save_checkpoint(target, model.state_dict(), card)
    return TeacherReport(teacher.name, teacher.classes, stem, best_acc, test_scores["accuracy"])


def trained_stem(spec: TaskSpec, teacher: TeacherSpec, root: Path) -> Path:
    """Where `train.py teachers` saves a teacher: always under checkpoints/<task>/, never elsewhere."""
    return root / "checkpoints" / spec.dir_name / spec.teacher_folder / teacher.name


def given_checkpoint(spec: TaskSpec, teacher: TeacherSpec, root: Path) -> Path | None:
    """The checkpoint the task names for a teacher (read, never written); None means "train me"."""
    if teacher.format == CAS771_FORMAT:
        return resolve_checkpoint_stem(spec, teacher, root)
    if teacher.checkpoint:
        stem = checkpoint_stem(resolve_checkpoint_stem(spec, teacher, root))
        return None if stem == trained_stem(spec, teacher, root) else stem
    return None


def is_amalgam_card(path: Path) -> bool:
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(card, dict) and card.get("format") == FORMAT


def check_replaceable(stem: Path) -> None:
    """Refuse to overwrite a checkpoint this app did not write: a foreign card or lone weights."""
    weights, card = checkpoint_files(stem)
    never = "`train.py teachers` never replaces a file it did not write"
    if card.exists() and not is_amalgam_card(card):
        raise UserError(f"{card} exists and is not an amalgam checkpoint card; move it away ({never})")
    if weights.exists() and not card.exists():
        raise UserError(f"{weights} exists without its card {card.name}; move or delete it ({never})")


def teachers_to_train(spec: TaskSpec, root: Path) -> list[TeacherSpec]:
    """The "train me" teachers, checked before any training: named checkpoints must exist."""
    chosen = []
    for teacher in spec.teachers:
        given = given_checkpoint(spec, teacher, root)
        if given is None:
            check_replaceable(trained_stem(spec, teacher, root))
            chosen.append(teacher)
        elif teacher.format != CAS771_FORMAT and not checkpoint_files(given)[0].exists():
            raise UserError(
                f"teacher {teacher.name!r}: the task names checkpoint {given}, which does not exist; "
                f"fix the path, or drop its `checkpoint` line to have it trained into "
                f"{trained_stem(spec, teacher, root)}"
            )
    return chosen


def check_teacher_space(spec: TaskSpec, teachers: list[TeacherSpec], root: Path) -> None:
    """Before the first teacher trains: its folder takes a file, and the disk has room for every
    checkpoint, so an hour of training never ends in a save that fails."""
    if not teachers:
        return
    need = 2**16 * len(teachers)  # the cards, and a margin
    for teacher in teachers:
        model = create_teacher(teacher.arch, len(teacher.classes))
        need += sum(t.numel() * t.element_size() for t in model.state_dict().values())
    check_writable(trained_stem(spec, teachers[0], root).parent, "teacher checkpoints", need_bytes=need)


def train_all_teachers(
    data: TaskData, config: TrainConfig, img_size: int, root: Path = PROJECT_ROOT
) -> list[TeacherReport]:
    """Train every teacher without a checkpoint of its own; those the task names are only read."""
    to_train = teachers_to_train(data.spec, root)
    check_teacher_space(data.spec, to_train, root)
    reports = []
    for teacher in data.spec.teachers:
        if teacher not in to_train:
            given = given_checkpoint(data.spec, teacher, root)
            say(f"{teacher.name}: uses the checkpoint the task names ({given}), not retrained", config.quiet)
            continue
        say(f"training {teacher.name} on {len(teacher.classes)} classes", config.quiet)
        report = train_teacher(data, teacher, replace(config), img_size, root)
        say(
            f"  {teacher.name}: val {report.val_accuracy:.2%}, test {report.test_accuracy:.2%} "
            f"on its own classes → {report.checkpoint}",
            config.quiet,
        )
        reports.append(report)
    return reports


def train_task_teachers(
    task: str,
    data_dir: str | None,
    val_fraction: float,
    train_per_class: int | None,
    config: TrainConfig,
    img_size: int | None,
    root: Path = PROJECT_ROOT,
    recipe: str = DEFAULT_TEACHER_RECIPE,
) -> list[TeacherReport]:
    """`train.py teachers`: load the task's data, then train the teachers it does not name
    checkpoints for, as the teacher recipe `recipe` says (its architecture, folder and data)."""
    spec = with_teacher_recipe(get_task(task), recipe)
    data = load_task_data(spec, data_dir, val_fraction, train_per_class)
    data = teacher_training_data(data, recipe, data_dir)
    return train_all_teachers(data, config, img_size or spec.img_size, root)
