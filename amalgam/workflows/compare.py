"""`python train.py compare`: every method, same student, data, epochs and augmentation, N seeds.

Every figure is the test score of the checkpoint chosen on validation accuracy; the
temperature for `ece_ts` is fitted on validation logits only. An arm is a method and whether
its training reads labels: `ce` reads them, `amalgam-kd:none` never does (`--labels`), so
labeled and label-free arms share one report, images and seeds.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch

from amalgam import PROJECT_ROOT
from amalgam.distill.engine.label_modes import LABEL_MODES, LABELED, check_labels_mode
from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.methods import METHODS, MethodOptions
from amalgam.distill.runs.folders import fresh_dir
from amalgam.distill.runs.run import DistilSettings, distil
from amalgam.distill.runs.saving import load_best
from amalgam.distill.runs.state import TrainingInterrupted
from amalgam.distill.teachers.extra import with_extra_teachers
from amalgam.distill.teachers.loading import load_ensemble
from amalgam.errors import UserError
from amalgam.harness.compare_report import write_compare_report
from amalgam.harness.evaluate import calibrated_test_scores
from amalgam.harness.teacher_scores import teacher_scores
from amalgam.models.metrics import teacher_pair_errors
from amalgam.tasks.builtin import get_task
from amalgam.tasks.loader import load_task_data
from amalgam.tasks.roster_draw import describe_roster, roster_record
from amalgam.tasks.teacher_recipes import DEFAULT_TEACHER_RECIPE, with_teacher_recipe
from amalgam.ui import say
from amalgam.writable import check_writable, is_write_failure

METRICS = ("accuracy", "macro_f1", "nll", "ece", "ece_ts",
           "errors_shared_teacher", "errors_no_shared_teacher")
TRAINING_KEYS = ("batch_size", "lr", "weight_decay", "opt", "scheduler", "warmup_epochs",
                 "teacher_precision")  # in the report


def parse_methods(text: str, labels: str = LABELED) -> list[str]:
    """The arms to run: `method` or `method:train|none` (training labels read or not; without a
    suffix, `labels`), named `method` when labeled and `method:none` when label-free. A
    label-free arm of a method that reads labels is refused here, before any training."""
    arms = []
    for entry in (m.strip() for m in text.split(",") if m.strip()):
        method, _, mode = entry.partition(":")
        mode = mode or labels
        if method not in METHODS:
            raise UserError(f"--methods has unknown {method!r}; choose from: {', '.join(sorted(METHODS))}")
        if mode not in LABEL_MODES:
            raise UserError(f"--methods {entry!r}: the suffix must be one of: {', '.join(LABEL_MODES)} "
                            "(e.g. amalgam-kd:none)")
        check_labels_mode(method, mode)
        arms.append(method if mode == LABELED else f"{method}:{mode}")
    if not arms:
        raise UserError(f"--methods has nothing; choose from: {', '.join(sorted(METHODS))}")
    return list(dict.fromkeys(arms))


def split_arm(arm: str) -> tuple[str, str]:
    """(method, labels) of an arm name from `parse_methods`."""
    method, _, mode = arm.partition(":")
    return method, mode or LABELED


def score_arm(result, data, device: torch.device) -> dict:
    """Test metrics of the validation-chosen checkpoint, calibration fitted on validation."""
    trainer = result.trainer
    load_best(trainer, result.run_dir)
    trainer.student.eval()
    trainer.method.eval()

    def predict(x):
        return trainer.method.predict(trainer.student, x)

    scores = calibrated_test_scores(predict, trainer.student_input, data, device)
    split = teacher_pair_errors(scores["predictions"], data.test.labels, data.spec.roster().coverage)
    return {
        **split,
        "accuracy": scores["accuracy"],
        "macro_f1": scores["macro_f1"],
        "nll": scores["nll"],
        "ece": scores["ece"],
        "ece_ts": scores["ece_ts"],
        "temperature": scores["temperature"],
        "best_epoch": result.best["epoch"],
        "val_accuracy": result.best["val_acc"],  # what defaults are chosen on; never the test score
    }


def summarise(runs: list[dict]) -> dict:
    summary = {}
    for metric in METRICS:
        values = torch.tensor([r[metric] for r in runs], dtype=torch.float64)
        std = float(values.std(unbiased=True)) if len(values) > 1 else 0.0
        summary[metric] = {"mean": float(values.mean()), "std": std, "runs": values.tolist()}
    return summary


def check_report_dir(out_dir: Path) -> None:
    """The report folder is new, empty, or an earlier comparison's; never someone else's."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a folder; pass a new or empty folder")
    names = {p.name for p in out_dir.iterdir()} if out_dir.is_dir() else set()
    if names and not names & {"compare.json", "runs"}:
        raise UserError(
            f"--out {out_dir} is not empty and holds no comparison; pass a new or empty folder "
            "(nothing in it is replaced)"
        )
    check_writable(out_dir, "the comparison")


def run_compare(
    task: str,
    methods: list[str],
    seeds: int,
    student: str,
    options: MethodOptions,
    config: TrainConfig,
    img_size: int | None,
    train_per_class: int | None,
    data_dir: str | None,
    root: Path = PROJECT_ROOT,
    out_dir: Path | None = None,
    shared: dict[str, dict] | None = None,
    extra_teachers: tuple[str, ...] = (),
    extra_teachers_only: bool = False,
    teacher_recipe: str = DEFAULT_TEACHER_RECIPE,
) -> dict:
    """Every arm over `seeds` seeds into out_dir's compare.json / .md / .png. Arms in `shared`
    are not trained: their results are taken as given (another drawn roster's, for a method
    that reads no teacher, which trains the same on every roster: see roster_compare.py)."""
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    for arm in methods:  # every arm's labels and options before the first arm trains
        check_labels_mode(*split_arm(arm), options.class_prior)
    spec = with_teacher_recipe(get_task(task), teacher_recipe)
    spec = with_extra_teachers(spec, extra_teachers, extra_teachers_only)
    out_dir = out_dir or root / "reports" / spec.dir_name / spec.teacher_folder
    check_report_dir(out_dir)
    say(f"task {spec.name}: {describe_roster(spec.teachers)}", config.quiet)
    data = load_task_data(spec, data_dir, train_per_class=train_per_class)
    device = torch.device(config.device)
    ensemble = load_ensemble(spec, device, root, (data.mean, data.std))
    teachers = teacher_scores(ensemble, data.test, device, balance_on=data.train)
    report = {
        "task": spec.name,
        "roster": roster_record(spec),
        "teacher_recipe": teacher_recipe,
        "extra_teachers": list(extra_teachers),
        "extra_teachers_only": extra_teachers_only,
        "student": student,
        "seeds": seeds,
        "epochs": config.epochs,
        "img_size": img_size or spec.student_input_size,
        "augment": config.augment,
        "training": {name: getattr(config, name) for name in TRAINING_KEYS},
        "train_per_class": train_per_class,
        "train_images": len(data.train),
        "test_images": len(data.test),
        "selection": "best validation accuracy; test scored once",
        "labels_note": "Arms with training labels `none` never read a training label (the task's "
                       "unlabeled images, if any, join their training set); validation labels are used "
                       "only to choose the checkpoint and to report",
        "method_options": options.to_dict(),
        "teachers_union_accuracy": teachers["union_accuracy"],
        "teachers_uhc_accuracy": teachers["uhc_union_accuracy"],
        "teachers_uhc_balanced_accuracy": teachers["uhc_balanced_accuracy"],
        "teachers_own_classes_accuracy": teachers["per_teacher"],
        "methods": {},
        "failed": {},
    }
    runs_dir = fresh_dir(out_dir / "runs" / time.strftime("%Y%m%d-%H%M%S"))  # never shared
    for arm in methods:
        method, labels = split_arm(arm)
        if shared and arm in shared:
            say(f"[bold]{arm}[/]: reads no teacher, so its runs are {shared[arm]['shared_from']}'s "
                "(same images, seeds and settings)", config.quiet)
            report["methods"][arm] = shared[arm]
            continue
        slug = method if labels == LABELED else f"{method}-nolabels"  # a folder name on any system
        runs = []
        for seed in range(seeds):
            say(f"[bold]{arm}[/] seed {seed + 1}/{seeds}", config.quiet)
            settings = DistilSettings(
                task=task,
                student=student,
                method=method,
                method_options=options,
                train=replace(config, seed=config.seed + seed, labels=labels),
                img_size=img_size,
                train_per_class=train_per_class,
                data_dir=data_dir,
                run_name=f"compare_{slug}_seed{seed}",
                extra_teachers=extra_teachers,
                extra_teachers_only=extra_teachers_only,
                teacher_recipe=teacher_recipe,
            )
            try:
                result = distil(settings, out_dir=runs_dir / f"{slug}_seed{seed}", root=root, data=data)
                runs.append(score_arm(result, data, device))
            except TrainingInterrupted:
                raise  # Ctrl-C stops the whole comparison, not just this arm
            except Exception as exc:  # a failed arm is reported, never hidden or fatal
                if is_write_failure(exc):
                    raise  # a full or read-only disk: every later arm would fail the same way
                report["failed"].setdefault(arm, []).append(
                    {
                        "seed": seed,
                        "error": f"{type(exc).__name__}: {exc}",
                        "where": traceback.format_exc(limit=3).strip().splitlines()[-1],
                    }
                )
        if runs:
            report["methods"][arm] = {**summarise(runs), "labels": labels, "per_seed": runs}
    write_compare_report(report, out_dir)
    return report
