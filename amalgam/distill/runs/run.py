"""A distillation run, start to finish: `distil` starts or continues one, `resume` reads one back.

Layout: runs/<YYYYmmdd-HHMMSS>_task_<T>[_<run>]/ with config.json (`runs.settings`), history.json,
learning_curve.png, best.* and last.* (`runs.saving`) and last_state.pt (`runs.state`).
A run owns its folder from the exclusive creation of config.json on (`runs.folders`); a run that
fails before saving any state removes what it claimed, so the same --out can be used again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from amalgam import PROJECT_ROOT
from amalgam.distill.engine.distributed import broadcast_from_main, cuda_device_for, init_distributed
from amalgam.distill.engine.label_modes import check_labels_mode, training_data
from amalgam.distill.engine.loss_log import epoch_line
from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.engine.trainer import NonFiniteLoss, TeacherSource, Trainer
from amalgam.distill.engine.views import to_unit_float
from amalgam.distill.losses.class_balance import prior_fit_rows
from amalgam.distill.losses.neighbours import pooled_features
from amalgam.distill.methods import Method, build_method
from amalgam.distill.runs.folders import (
    check_new_run,
    claim_run_dir,
    default_run_dir,
    release_unstarted,
    write_json,
)
from amalgam.distill.runs.metric_log import EpochHook, check_metric_log, metric_log
from amalgam.distill.runs.saving import save_epoch
from amalgam.distill.runs.settings import DistilSettings, read_settings
from amalgam.distill.runs.state import (
    SavedRun,
    TrainingInterrupted,
    load_state,
    restore_state,
    stop_on_interrupt,
)
from amalgam.distill.teachers.cache import teacher_source_for
from amalgam.distill.teachers.ensemble import TeacherEnsemble
from amalgam.distill.teachers.given import GivenTeachers
from amalgam.distill.teachers.loading import load_given_teachers
from amalgam.models.frozen import resolve_precision
from amalgam.models.model_input import ModelInput
from amalgam.models.students import create_student
from amalgam.tasks.loader import TaskData, load_task_data
from amalgam.tasks.roster_draw import describe_roster
from amalgam.ui import say
from amalgam.writable import check_writable


@dataclass
class RunResult:
    run_dir: Path
    best: dict
    history: list[dict]
    trainer: Trainer


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
    given: GivenTeachers | None = None,
) -> RunResult:
    """Train one student from the task's teachers (or alone, for `ce`) and save the run.

    The run folder is claimed only once start-up is done, so Ctrl-C or an error before
    training leaves nothing behind; a claimed folder that never got a state is removed.
    `given`: teachers handed over as modules (amalgam.distil), with `data` built from the
    caller's datasets; the task is then `data.spec`, and nothing is read from task files.
    """
    if resume_from is None:
        check_new_run(settings.run_name, out_dir)
    check_metric_log(settings.log)
    # a read-only or full home fails here, in a second, not after the teacher cache is built
    writes_into = resume_from.run_dir if resume_from is not None else out_dir or root / "runs"
    check_writable(writes_into, "the run")
    try:
        prepared = start_up(settings, root, data, given)
    except KeyboardInterrupt:
        raise TrainingInterrupted(
            "interrupted during start-up, before training began; no run folder was written"
        ) from None
    if prepared.is_main:
        check_writable(writes_into, "the run", need_bytes=run_bytes(prepared.trainer))
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
                write_json(claim.path / "config.json", prepared.settings.record(spec if given else None))
            run_dir = broadcast_from_main(claim.path if claim else None, prepared.trainer.dist)
        run_training(prepared, run_dir)
    except BaseException:
        if claim is not None:
            release_unstarted(claim)
        raise
    trainer = prepared.trainer
    return RunResult(run_dir, trainer.best_epoch(), trainer.history, trainer)


def run_bytes(trainer: Trainer) -> int:
    """About what one epoch's save takes: the student's weights in best.* and last.*, its state
    with the optimiser's moments (last_state.pt), the method's helpers, and a margin for the
    JSON files and the learning curve."""
    weights = sum(t.numel() * t.element_size() for t in trainer.student.state_dict().values())
    helpers = sum(t.numel() * t.element_size() for t in trainer.method.state_dict().values())
    return 5 * weights + 2 * helpers + 2**20


def start_up(
    settings: DistilSettings, root: Path, data: TaskData | None, given: GivenTeachers | None = None
) -> Prepared:
    """Data, student, teachers (and their logit cache) and trainer; writes no run folder."""
    spec = data.spec if given is not None and data is not None else settings.task_spec()
    say(f"task {spec.name}: {describe_roster(spec.teachers)}", settings.train.quiet)
    method = build_method(settings.method, spec.roster(), settings.method_options)
    # before any data is read
    check_labels_mode(settings.method, settings.train.labels, settings.method_options.class_prior)
    data = data or load_task_data(spec, settings.data_dir, settings.val_fraction, settings.train_per_class)
    data = training_data(data, settings.train.labels, settings.train.quiet)
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
    student = create_student(settings.student, spec.num_classes, settings.pretrained, model_input.img_size)
    teachers = None
    if method.uses_teachers:
        # one path for the task's checkpoints and for modules handed over by amalgam.distil
        given = given or load_given_teachers(spec, root, (data.mean, data.std))
        ensemble = given.ensemble(spec.roster(), device)
        map_size = None
        if method.needs_features:
            map_size = setup_feature_method(method, student.to(device), model_input, ensemble, data, device)
        # every rank builds its share of the teacher cache (teachers/shared_build.py)
        teachers = teacher_source_for(spec, data, method, config, ensemble, root, student_map_size=map_size,
                                      weight_digests=given.digests, dist_env=env)
        fit_to_training_set(method, teachers, data, config, ensemble)
        fit_to_validation(method, ensemble, data, config)
    trainer = Trainer(
        student, method, model_input, data.train, data.val, spec.num_classes, config, teachers, env
    )
    return Prepared(settings, data, model_input, trainer, env.is_main)


def setup_feature_method(
    method, student, model_input: ModelInput, ensemble, data: TaskData, device: torch.device
) -> tuple[int, int] | None:
    """Let a feature method size its regressors/projectors from one dry batch; the student's
    feature map size (what hint reductions of the teachers' maps are made for), None when its
    features are not a map (a ViT's tokens)."""
    view = to_unit_float(data.train.images[:2], device)
    with torch.no_grad():
        student_features = student.eval().forward_features(model_input(view))
    _, teacher_features = ensemble.forward_with_features(view)
    method.setup(student_features, teacher_features, list(ensemble.teachers))
    if student_features.dim() != 4:
        return None
    return int(student_features.shape[-2]), int(student_features.shape[-1])


def fit_to_training_set(
    method: Method, teachers: TeacherSource, data: TaskData, config: TrainConfig,
    ensemble: TeacherEnsemble | None = None, batch_size: int = 256,
) -> None:
    """Hand a method that needs it (`--class-prior`, `--target-neighbours`) every teacher's
    logits on the training set (every image for a fit per image, else `prior_fit_rows`), plain
    view, from the source training reads: the cache's entry when there is one (no teacher runs
    again), else the teachers online; and, where the method reads them, the teachers' pooled
    features, from `ensemble` (one more pass, as setting up a feature method does). Every rank
    computes the same."""
    if not method.fits_training_set:
        return
    if method.fit_reads_features and ensemble is None:
        raise ValueError(f"{method.name}: fitting to the training set needs the teachers' features")
    device = torch.device(config.device)
    images = data.train.images
    rows = (torch.arange(len(images)) if method.fit_per_image
            else prior_fit_rows(len(images), method.roster.num_classes))
    logit_blocks, feature_blocks = [], []
    for index in rows.split(batch_size):
        view = to_unit_float(images[index], device)
        with torch.no_grad():
            logit_blocks.append(teachers(index, view).logits.float().cpu())
            if method.fit_reads_features:
                feature_blocks.append(pooled_features(ensemble.forward_with_features(view)[1]).cpu())
    features = torch.cat(feature_blocks) if feature_blocks else None
    # only --class-prior labels reads them (a --labels none run with it is refused at start)
    labels = data.train.labels[rows] if method.options.class_prior == "labels" else None
    fitted = method.fit_to_training_set(torch.cat(logit_blocks), features, labels)
    if fitted:
        say(fitted, config.quiet)


def fit_to_validation(
    method: Method, ensemble: TeacherEnsemble, data: TaskData, config: TrainConfig, batch_size: int = 256
) -> None:
    """Hand a method that needs it (`--teacher-trust per-class`) the teachers' logits on the
    validation images, plain view, and their labels: one pass of the teachers as loaded (fp32,
    as evaluation scores them; no second folded copy) over the validation set, at start-up and
    on resume."""
    if not method.fits_validation:
        return
    device = torch.device(config.device)
    images = data.val.images
    with torch.no_grad():
        blocks = [ensemble(to_unit_float(images[start:start + batch_size], device)).float().cpu()
                  for start in range(0, len(images), batch_size)]
    fitted = method.fit_to_validation(torch.cat(blocks), data.val.labels)
    if fitted:
        say(fitted, config.quiet)


def run_training(prepared: Prepared, run_dir: Path) -> None:
    trainer, settings = prepared.trainer, prepared.settings
    try:
        with (
            stop_on_interrupt(settings.checkpoint_every, run_dir, prepared.is_main) as after_step,
            metric_log(settings.log, run_dir, prepared.is_main) as on_epoch,
        ):
            train_epochs(
                trainer, settings, prepared.data, prepared.model_input, run_dir, after_step, prepared.is_main,
                on_epoch,
            )
    except NonFiniteLoss as exc:
        good = f"{run_dir / 'last'} (epoch {trainer.epoch})" if trainer.epoch else "none yet"
        raise NonFiniteLoss(f"{exc}; last good checkpoint: {good}, left untouched") from exc


def train_epochs(
    trainer: Trainer,
    settings: DistilSettings,
    data: TaskData,
    model_input: ModelInput,
    run_dir: Path,
    after_step,
    writes: bool = True,
    on_epoch: EpochHook | None = None,
) -> None:
    config = settings.train
    while trainer.epoch < config.epochs:
        row = trainer.train_epoch(after_step)
        say(epoch_line(row, config.epochs), config.quiet or not writes)
        if writes:
            save_epoch(trainer, settings, data, model_input, run_dir)
        if on_epoch is not None:
            on_epoch(row)  # --log tensorboard


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
        write_json(run_dir / "config.json", settings.record())
    return distil(settings, root=root, resume_from=saved)
