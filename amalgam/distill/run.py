"""A distillation run on disk: config.json says everything needed to re-run it.

Layout: runs/<YYYYmmdd-HHMMSS>_task_<T>[_<run>]/ with config.json, history.json,
learning_curve.png, best.{safetensors,json}, last.{safetensors,json} and last_state.pt
(optimiser, scheduler, epoch, RNG; tensors only, read back with weights_only=True).
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from amalgam import PROJECT_ROOT
from amalgam.distill.distributed import barrier, broadcast_from_main, cuda_device_for, init_distributed
from amalgam.distill.methods import MethodOptions, build_method
from amalgam.distill.teacher_cache import teacher_source_for
from amalgam.distill.teachers import load_ensemble
from amalgam.distill.trainer import NonFiniteLoss, TrainConfig, Trainer
from amalgam.distill.views import ModelInput, to_unit_float
from amalgam.errors import UserError
from amalgam.harness.plots import learning_curve
from amalgam.models.checkpoint import ModelCard, atomic_write_bytes, save_checkpoint
from amalgam.models.frozen import resolve_precision
from amalgam.models.students import canonical_student, create_student
from amalgam.tasks.builtin import get_task
from amalgam.tasks.loader import TaskData, load_task_data
from amalgam.ui import say

STATE_FILE = "last_state.pt"
BEST_METHOD_FILE = "best_method.safetensors"


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
    checkpoint_every: int = 0  # steps between mid-epoch state saves; 0 = at epoch ends only

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DistilSettings:
        data = dict(data)
        data["method_options"] = MethodOptions(**data["method_options"])
        data["train"] = TrainConfig(**data["train"])
        return cls(**data)


def default_run_dir(runs_root: Path, task_dir_name: str, run_name: str) -> Path:
    """runs/<YYYYmmdd-HHMMSS>_task_<T>[_<run>], with -2, -3… if that second is taken."""
    suffix = f"_{run_name}" if run_name else ""
    base = runs_root / f"{time.strftime('%Y%m%d-%H%M%S')}_task_{task_dir_name}{suffix}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def claim_run_dir(run_dir: Path) -> Path:
    """Create the run directory; one that already holds a run is never overwritten."""
    if (run_dir / "config.json").exists() or (run_dir / STATE_FILE).exists():
        raise UserError(f"{run_dir} already holds a run; pass another --out, or --resume {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def write_json(path: Path, data) -> None:
    text = json.dumps(data, indent=2)
    atomic_write_bytes(path, lambda p: p.write_text(text))


@dataclass
class RunResult:
    run_dir: Path
    best: dict
    history: list[dict]
    trainer: Trainer


def setup_feature_method(
    method, student, model_input: ModelInput, ensemble, data: TaskData, device: torch.device
) -> None:
    """Let a feature method size its regressors/projectors from one dry batch."""
    view = to_unit_float(data.train.images[:2], device)
    with torch.no_grad():
        student_features = student.eval().forward_features(model_input(view))
    _, teacher_features = ensemble.forward_with_features(view)
    method.setup(student_features, teacher_features, list(ensemble.teachers))


def load_best(trainer: Trainer, run_dir: Path) -> None:
    """Put the validation-chosen weights (student and method helpers) back into the trainer."""
    trainer.student.load_state_dict(load_file(str(run_dir / "best.safetensors")))
    method_file = run_dir / BEST_METHOD_FILE
    if method_file.exists():
        trainer.method.load_state_dict(load_file(str(method_file)))


def student_card(
    settings: DistilSettings, data: TaskData, model_input: ModelInput, metrics: dict
) -> ModelCard:
    return ModelCard(
        kind="student",
        arch=canonical_student(settings.student),
        classes=list(data.spec.classes),
        img_size=model_input.img_size,
        mean=list(model_input.mean),
        std=list(model_input.std),
        task=data.spec.name,
        metrics=metrics,
        trained_on={"task": data.spec.name, "method": settings.method, "images": len(data.train)},
    )


def distil(
    settings: DistilSettings,
    out_dir: Path | None = None,
    resume_dir: Path | None = None,
    root: Path = PROJECT_ROOT,
    data: TaskData | None = None,
) -> RunResult:
    """Train one student from the task's teachers (or alone, for `ce`) and save the run."""
    spec = get_task(settings.task)
    method = build_method(settings.method, spec.roster(), settings.method_options)
    data = data or load_task_data(spec, settings.data_dir, settings.val_fraction, settings.train_per_class)
    env = init_distributed(settings.train.device)
    # config.json records what the teachers really ran in, so a resume elsewhere matches
    precision = resolve_precision(settings.train.teacher_precision, torch.device(settings.train.device))
    settings = replace(settings, train=replace(settings.train, teacher_precision=precision))
    config = replace(
        settings.train,
        device=cuda_device_for(settings.train.device, env),
        quiet=settings.train.quiet or not env.is_main,
    )  # one process speaks and writes
    device = torch.device(config.device)
    model_input = ModelInput(settings.img_size or spec.student_input_size, data.mean, data.std)
    torch.manual_seed(config.seed)
    student = create_student(settings.student, spec.num_classes, settings.pretrained)
    teachers = None
    if method.uses_teachers:
        ensemble = load_ensemble(spec, device, root)
        if not env.is_main:
            barrier(env)  # rank 0 builds the teacher cache first; the others then read it
        teachers = teacher_source_for(spec, data, method, config, ensemble, root)
        if env.is_main:
            barrier(env)
        if method.needs_features:
            setup_feature_method(method, student.to(device), model_input, ensemble, data, device)
    trainer = Trainer(
        student, method, model_input, data.train, data.val, spec.num_classes, config, teachers, env
    )
    if resume_dir is not None:
        run_dir = resume_dir
        trainer.load_state_dict(torch.load(run_dir / STATE_FILE, weights_only=True))
        say(f"resuming {run_dir} at epoch {trainer.epoch + 1}/{config.epochs}", config.quiet)
    else:
        run_dir = None
        if env.is_main:
            run_dir = claim_run_dir(
                out_dir or default_run_dir(root / "runs", spec.dir_name, settings.run_name)
            )
            write_json(run_dir / "config.json", settings.to_dict())
        run_dir = broadcast_from_main(run_dir, env)
    try:
        with stop_on_interrupt(settings.checkpoint_every, run_dir, env.is_main) as after_step:
            train_epochs(trainer, settings, data, model_input, run_dir, after_step, env.is_main)
    except NonFiniteLoss as exc:
        good = f"{run_dir / 'last'} (epoch {trainer.epoch})" if trainer.epoch else "none yet"
        raise NonFiniteLoss(f"{exc}; last good checkpoint: {good}, left untouched") from exc
    best = trainer.best_epoch()
    return RunResult(run_dir, best, trainer.history, trainer)


class TrainingInterrupted(UserError):
    """Ctrl-C: the state was saved; the message says how to resume."""

    exit_code = 130


def save_state(trainer: Trainer, run_dir: Path) -> None:
    state = trainer.state_dict()
    atomic_write_bytes(run_dir / STATE_FILE, lambda p: torch.save(state, p))


@contextlib.contextmanager
def stop_on_interrupt(checkpoint_every: int, run_dir: Path, writes: bool = True):
    """Turn Ctrl-C into a clean stop after the current step, with the state saved first."""
    requested = threading.Event()

    def after_step(trainer: Trainer) -> None:
        step = trainer.progress["step"]
        if writes and (requested.is_set() or (checkpoint_every and step % checkpoint_every == 0)):
            save_state(trainer, run_dir)
        if requested.is_set():
            raise TrainingInterrupted(
                f"interrupted at epoch {trainer.epoch + 1} step {step}; state saved in "
                f"{run_dir / STATE_FILE}; resume with: python train.py --resume {run_dir}"
            )

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda *_: requested.set()) if in_main else None
    try:
        yield after_step
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)


def train_epochs(
    trainer: Trainer,
    settings: DistilSettings,
    data: TaskData,
    model_input: ModelInput,
    run_dir: Path,
    after_step,
    writes: bool = True,
) -> None:
    config = settings.train
    while trainer.epoch < config.epochs:
        row = trainer.train_epoch(after_step)
        say(
            f"epoch {row['epoch']}/{config.epochs}: train loss {row['train_loss']:.4f} "
            f"acc {row['train_acc']:.2%} | val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%} "
            f"macro-F1 {row['val_macro_f1']:.3f} | {row['seconds']:.1f}s",
            config.quiet or not writes,
        )
        if writes:
            save_epoch(trainer, settings, data, model_input, run_dir)


def save_epoch(
    trainer: Trainer, settings: DistilSettings, data: TaskData, model_input: ModelInput, run_dir: Path
) -> None:
    """Write last (always) and best (when this epoch is the best so far), then the log."""
    row = trainer.history[-1]
    weights = trainer.student.state_dict()
    metrics = {k: row[k] for k in ("epoch", "val_acc", "val_loss", "val_macro_f1")}
    card = student_card(settings, data, model_input, metrics)
    if trainer.best_epoch() is row:
        best_card = replace(card, metrics={**metrics, "selected_on": "val_acc"})
        save_checkpoint(run_dir / "best", weights, best_card)
        method_state = {k: v.detach().cpu().contiguous() for k, v in trainer.method.state_dict().items()}
        if method_state:  # projectors / regressors, needed to score SimKD's reused classifiers
            atomic_write_bytes(run_dir / BEST_METHOD_FILE, lambda p: save_file(method_state, str(p)))
    save_checkpoint(run_dir / "last", weights, card)
    save_state(trainer, run_dir)
    write_json(run_dir / "history.json", trainer.history)
    learning_curve(
        trainer.history,
        run_dir / "learning_curve.png",
        f"task {data.spec.name}: {settings.student}, {settings.method}",
    )


def resume(
    run_dir: Path, epochs: int | None = None, quiet: bool | None = None, root: Path = PROJECT_ROOT
) -> RunResult:
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
    return distil(settings, resume_dir=run_dir, root=root)
