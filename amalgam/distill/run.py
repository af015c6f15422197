"""A distillation run on disk: config.json says everything needed to re-run it.

Layout: runs/<YYYYmmdd-HHMMSS>_task_<T>[_<run>]/ with config.json, history.json,
learning_curve.png, best.{safetensors,json}, last.{safetensors,json} and last_state.pt
(optimiser, scheduler, epoch, RNG; tensors only, read back with weights_only=True).
A run owns its folder from the exclusive creation of config.json on; a run that fails
before saving any state removes what it claimed, so the same --out can be used again.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import signal
import threading
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from amalgam import PROJECT_ROOT
from amalgam.distill.curves import learning_curve
from amalgam.distill.distributed import barrier, broadcast_from_main, cuda_device_for, init_distributed
from amalgam.distill.methods import MethodOptions, build_method
from amalgam.distill.run_dirs import (
    STATE_FILE,
    check_new_run,
    claim_run_dir,
    default_run_dir,
    release_unstarted,
)
from amalgam.distill.teacher_cache import teacher_source_for
from amalgam.distill.teachers import load_ensemble
from amalgam.distill.trainer import NonFiniteLoss, TrainConfig, Trainer
from amalgam.distill.views import to_unit_float
from amalgam.errors import UserError
from amalgam.models.checkpoint import ModelCard, atomic_write_bytes, save_checkpoint
from amalgam.models.frozen import resolve_precision
from amalgam.models.model_input import ModelInput
from amalgam.models.students import canonical_student, create_student
from amalgam.tasks.builtin import get_task
from amalgam.tasks.loader import TaskData, load_task_data
from amalgam.ui import say

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


@dataclass(frozen=True)
class SavedRun:
    """A stopped run to continue: its folder and its checked trainer state."""

    run_dir: Path
    state: dict


@dataclass
class Prepared:
    """Everything start-up builds before the first step: data, teachers (maybe cached), trainer."""

    settings: DistilSettings
    data: TaskData
    model_input: ModelInput
    trainer: Trainer
    is_main: bool


def distil(
    settings: DistilSettings,
    out_dir: Path | None = None,
    root: Path = PROJECT_ROOT,
    data: TaskData | None = None,
    resume_from: SavedRun | None = None,
) -> RunResult:
    """Train one student from the task's teachers (or alone, for `ce`) and save the run.

    The run folder is claimed only once start-up is done, so Ctrl-C or an error before
    training leaves nothing behind; a claimed folder that never got a state is removed.
    """
    if resume_from is None:
        check_new_run(settings.run_name, out_dir)
    try:
        prepared = start_up(settings, root, data)
    except KeyboardInterrupt:
        raise TrainingInterrupted(
            "interrupted during start-up, before training began; no run folder was written"
        ) from None
    spec = prepared.data.spec
    claim = None
    try:
        if resume_from is not None:
            run_dir = resume_from.run_dir
            restore_state(prepared.trainer, resume_from.state, run_dir)
            say(f"resuming {run_dir} at epoch {prepared.trainer.epoch + 1}/{settings.train.epochs}",
                prepared.trainer.config.quiet)
        else:
            if prepared.is_main:
                default = default_run_dir(root / "runs", spec.dir_name, settings.run_name)
                claim = claim_run_dir(out_dir, default)
                write_json(claim.path / "config.json", prepared.settings.to_dict())
            run_dir = broadcast_from_main(claim.path if claim else None, prepared.trainer.dist)
        run_training(prepared, run_dir)
    except BaseException:
        if claim is not None:
            release_unstarted(claim)
        raise
    trainer = prepared.trainer
    return RunResult(run_dir, trainer.best_epoch(), trainer.history, trainer)


def start_up(settings: DistilSettings, root: Path, data: TaskData | None) -> Prepared:
    """Data, student, teachers (and their logit cache) and trainer; writes no run folder."""
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
    return Prepared(settings, data, model_input, trainer, env.is_main)


def run_training(prepared: Prepared, run_dir: Path) -> None:
    trainer, settings = prepared.trainer, prepared.settings
    try:
        with stop_on_interrupt(settings.checkpoint_every, run_dir, prepared.is_main) as after_step:
            train_epochs(
                trainer, settings, prepared.data, prepared.model_input, run_dir, after_step, prepared.is_main
            )
    except NonFiniteLoss as exc:
        good = f"{run_dir / 'last'} (epoch {trainer.epoch})" if trainer.epoch else "none yet"
        raise NonFiniteLoss(f"{exc}; last good checkpoint: {good}, left untouched") from exc


def cannot_resume(run_dir: Path) -> str:
    """What to do instead of resuming: where the last finished epoch's weights are."""
    last = run_dir / "last.safetensors"
    kept = f"the last finished epoch's weights are in {last}" if last.exists() else "no epoch finished"
    return f"this run cannot be resumed ({kept}); start a new run"


def load_state(run_dir: Path) -> dict:
    """The saved trainer state, read as tensors only: a damaged or foreign file is refused."""
    path = run_dir / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        what = "holds objects other than tensors (code?)" if "Weights only" in str(exc) else "is damaged"
        raise UserError(f"{path} {what} and was not loaded; {cannot_resume(run_dir)}") from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UserError(
            f"{path} is damaged (truncated or not a torch file) and was not loaded; {cannot_resume(run_dir)}"
        ) from exc
    if not isinstance(state, dict) or not {"student", "optimizer", "epoch"} <= state.keys():
        raise UserError(f"{path} is not a trainer state and was not loaded; {cannot_resume(run_dir)}")
    return state


def restore_state(trainer: Trainer, state: dict, run_dir: Path) -> None:
    try:
        trainer.load_state_dict(state)
    except (KeyError, RuntimeError, TypeError, ValueError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(
            f"{run_dir / STATE_FILE} does not fit this run's student, method or optimiser ({first}); "
            f"{cannot_resume(run_dir)}"
        ) from exc


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
    settings = read_settings(run_dir)
    saved = SavedRun(run_dir, load_state(run_dir))  # checked before config.json is touched
    overrides = {}
    if epochs is not None:
        overrides["epochs"] = epochs
    if quiet is not None:
        overrides["quiet"] = quiet
    if overrides:
        settings = replace(settings, train=replace(settings.train, **overrides))
        write_json(run_dir / "config.json", settings.to_dict())
    return distil(settings, root=root, resume_from=saved)


def read_settings(run_dir: Path) -> DistilSettings:
    """A run's config.json, or a one-line reason why this folder cannot be resumed."""
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"--resume {run_dir} is not a run folder (no config.json); check the path")
    if not (run_dir / STATE_FILE).is_file():
        raise UserError(
            f"--resume {run_dir}: the run stopped before saving any state ({STATE_FILE}); start a new run"
        )
    try:
        return DistilSettings.from_dict(json.loads(config_path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError, ValueError, AttributeError) as exc:
        raise UserError(f"{config_path} is corrupt ({exc}); start a new run instead") from exc
