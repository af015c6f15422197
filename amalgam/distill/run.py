"""A distillation run on disk: config.json says everything needed to re-run it.

Layout: runs/<YYYYmmdd-HHMMSS>_task_<T>[_<run>]/ with config.json, history.json,
learning_curve.png, best.{safetensors,json}, last.{safetensors,json} and last_state.pt
(optimiser, scheduler, epoch, RNG; tensors only, read back with weights_only=True).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from amalgam import PROJECT_ROOT
from amalgam.distill.methods import MethodOptions, TeacherOutputs, build_method
from amalgam.distill.teachers import load_ensemble
from amalgam.distill.trainer import TrainConfig, Trainer
from amalgam.distill.views import ModelInput
from amalgam.errors import UserError
from amalgam.harness.plots import learning_curve
from amalgam.models.checkpoint import ModelCard, atomic_write_bytes, save_checkpoint
from amalgam.models.students import canonical_student, create_student
from amalgam.tasks.builtin import get_task
from amalgam.tasks.loader import TaskData, load_task_data
from amalgam.ui import say

STATE_FILE = "last_state.pt"


@dataclass(frozen=True)
class DistilSettings:
    """One run, fully described; saved as config.json and read back by --resume."""

    task: str
    student: str
    method: str
    method_options: MethodOptions = field(default_factory=MethodOptions)
    train: TrainConfig = field(default_factory=TrainConfig)
    img_size: int | None = None
    val_fraction: float = 0.1
    train_per_class: int | None = None
    data_dir: str | None = None
    pretrained: bool = False
    run_name: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DistilSettings:
        data = dict(data)
        data["method_options"] = MethodOptions(**data["method_options"])
        data["train"] = TrainConfig(**data["train"])
        return cls(**data)


def new_run_dir(out_root: Path, task_dir_name: str, run_name: str) -> Path:
    suffix = f"_{run_name}" if run_name else ""
    run_dir = out_root / f"{time.strftime('%Y%m%d-%H%M%S')}_task_{task_dir_name}{suffix}"
    if (run_dir / "config.json").exists():
        raise UserError(
            f"{run_dir} already holds a run and is never overwritten; wait a second, "
            "pass another --run name, or --resume it"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def write_json(path: Path, data) -> None:
    text = json.dumps(data, indent=2)
    atomic_write_bytes(path, lambda p: p.write_text(text))


def online_teacher_source(ensemble):
    def source(index: torch.Tensor, view: torch.Tensor) -> TeacherOutputs:
        return TeacherOutputs(ensemble(view))

    return source


@dataclass
class RunResult:
    run_dir: Path
    best: dict
    history: list[dict]


def student_card(settings: DistilSettings, data: TaskData, model_input: ModelInput, metrics: dict) -> ModelCard:
    return ModelCard(
        kind="student", arch=canonical_student(settings.student), classes=list(data.spec.classes),
        img_size=model_input.img_size, mean=list(model_input.mean), std=list(model_input.std),
        task=data.spec.name, metrics=metrics,
        trained_on={"task": data.spec.name, "method": settings.method, "images": len(data.train)},
    )


def distil(
    settings: DistilSettings,
    out_root: Path = PROJECT_ROOT / "runs",
    resume_dir: Path | None = None,
    root: Path = PROJECT_ROOT,
    data: TaskData | None = None,
) -> RunResult:
    """Train one student from the task's teachers (or alone, for `ce`) and save the run."""
    spec = get_task(settings.task)
    method = build_method(settings.method, spec.roster(), settings.method_options)
    data = data or load_task_data(spec, settings.data_dir, settings.val_fraction, settings.train_per_class)
    config = settings.train
    device = torch.device(config.device)
    model_input = ModelInput(settings.img_size or spec.img_size, data.mean, data.std)
    torch.manual_seed(config.seed)
    student = create_student(settings.student, spec.num_classes, settings.pretrained)
    teachers = None
    if method.uses_teachers:
        teachers = online_teacher_source(load_ensemble(spec, device, root))
    trainer = Trainer(student, method, model_input, data.train, data.val, spec.num_classes, config, teachers)
    if resume_dir is not None:
        run_dir = resume_dir
        trainer.load_state_dict(torch.load(run_dir / STATE_FILE, weights_only=True))
        say(f"resuming {run_dir} at epoch {trainer.epoch + 1}/{config.epochs}", config.quiet)
    else:
        run_dir = new_run_dir(out_root, spec.dir_name, settings.run_name)
        write_json(run_dir / "config.json", settings.to_dict())
    while trainer.epoch < config.epochs:
        row = trainer.train_epoch()
        say(f"epoch {row['epoch']}/{config.epochs}: train loss {row['train_loss']:.4f} "
            f"acc {row['train_acc']:.2%} | val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%} "
            f"macro-F1 {row['val_macro_f1']:.3f} | {row['seconds']:.1f}s", config.quiet)
        save_epoch(trainer, settings, data, model_input, run_dir)
    best = trainer.best_epoch()
    return RunResult(run_dir, best, trainer.history)


def save_epoch(trainer: Trainer, settings: DistilSettings, data: TaskData, model_input: ModelInput,
               run_dir: Path) -> None:
    """Write last (always) and best (when this epoch is the best so far), then the log."""
    row = trainer.history[-1]
    weights = trainer.student.state_dict()
    metrics = {k: row[k] for k in ("epoch", "val_acc", "val_loss", "val_macro_f1")}
    card = student_card(settings, data, model_input, metrics)
    if trainer.best_epoch() is row:
        save_checkpoint(run_dir / "best", weights, replace(card, metrics={**metrics, "selected_on": "val_acc"}))
    save_checkpoint(run_dir / "last", weights, card)
    state = trainer.state_dict()
    atomic_write_bytes(run_dir / STATE_FILE, lambda p: torch.save(state, p))
    write_json(run_dir / "history.json", trainer.history)
    learning_curve(trainer.history, run_dir / "learning_curve.png",
                   f"task {data.spec.name}: {settings.student}, {settings.method}")


def resume(run_dir: Path, epochs: int | None = None, quiet: bool | None = None) -> RunResult:
    config_path = run_dir / "config.json"
    if not config_path.exists() or not (run_dir / STATE_FILE).exists():
        raise UserError(f"{run_dir} is not a resumable run (no config.json or {STATE_FILE}); check the path")
    try:
        settings = DistilSettings.from_dict(json.loads(config_path.read_text()))
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise UserError(f"{config_path} is corrupt ({exc}); start a new run instead") from exc
    overrides = {}
    if epochs is not None:
        overrides["epochs"] = epochs
    if quiet is not None:
        overrides["quiet"] = quiet
    if overrides:
        settings = replace(settings, train=replace(settings.train, **overrides))
        write_json(config_path, settings.to_dict())
    return distil(settings, resume_dir=run_dir)
