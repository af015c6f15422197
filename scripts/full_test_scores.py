"""Score finished runs of `fashion-mini` tasks on the whole Fashion-MNIST test split.

`fashion-mini`'s own test split is 600 images: one image is 0.17 points, a seed's accuracy
moves by about 1.4 points (binomial standard error at 88 %), and a perfectly calibrated model
measures an ECE of about 0.03 on it (bench/bench_ece_floor.py), so neither a 2-point margin nor
an ECE target of 0.03 can be told apart from noise there. The full split (10,000 images, the
600 among them, none ever trained on) can: this script scores each run's validation-chosen
epoch on it, with the temperature fitted on the run's own validation images as the harness
does, and the run's teachers combined on the same images.

    python scripts/full_test_scores.py reports/quality/fresh > docs/benchmarks/data/quality-full.csv
    python scripts/full_test_scores.py --targets reports/quality/fresh \
        > docs/benchmarks/data/quality-full-targets.csv
    python scripts/full_test_scores.py --headline reports/quality/fresh > docs/benchmarks/data/headline.csv

(docs/benchmarks/quality.md gives the folders each file was written from.)

Finds every finished run folder (best.json and config.json) under the folders given.

`--split held-out` scores on 10,000 images of Fashion-MNIST's *training* split that `fashion-mini`
never uses (the 1,000 of each class after its first 300): a validation set 33 times the size of
the task's own, for choosing a recipe without looking at any test image.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import torch

from amalgam import PROJECT_ROOT
from amalgam.distill.engine.label_modes import LABELED
from amalgam.distill.engine.train_config import STUDENT_AUGMENT
from amalgam.distill.engine.views import student_views
from amalgam.distill.methods import METHODS, MethodOptions
from amalgam.distill.runs.recipes import (
    LABEL_FREE_RECIPE,
    LABELED_RECIPE,
    SHORT_LABEL_FREE_RECIPE,
    SHORT_RECIPE,
    Recipe,
)
from amalgam.distill.runs.settings import DistilSettings
from amalgam.distill.teachers.loading import load_ensemble
from amalgam.errors import UserError
from amalgam.harness.evaluate import load_any_student, score_student
from amalgam.harness.teacher_scores import teacher_scores
from amalgam.tasks.fashion import SCORING_SPLITS, scoring_images
from amalgam.tasks.loader import load_task_data


def columns(split: str) -> tuple[str, ...]:
    return ("task", "teachers", "student", "epochs", "method", "options", "training labels",
            "seed", "val accuracy, %", f"{split} accuracy (10,000), %", f"ECE after T-scaling ({split})",
            f"teachers combined: mean / UHC / UHC balanced ({split}), %")


def percent(value: float) -> str:
    return f"{100 * value:.2f}"


def run_folders(roots: list[Path]) -> list[Path]:
    return sorted({best.parent for root in roots for best in root.rglob("best.json")
                   if (best.parent / "config.json").is_file() and (best.parent / "history.json").is_file()})


def changed_options(settings: DistilSettings) -> str:
    """The method options the run's method reads that differ from their defaults, and a
    non-default augmentation: what tells two runs of one method apart."""
    defaults = MethodOptions()
    read = METHODS[settings.method].options_used
    changed = [f"{name} {getattr(settings.method_options, name)}" for name in read
               if getattr(settings.method_options, name) != getattr(defaults, name)]
    if settings.train.augment != STUDENT_AUGMENT:
        changed.append(f"augment {settings.train.augment}")
    return "; ".join(changed)


def score_runs(roots: list[Path], device: torch.device, split: str = "test",
               cache: Path | None = None) -> list[dict]:
    """One row per finished run; with `cache`, a JSON file of rows already scored (keyed by run
    folder, split and the time its best.json was written) is read first and written after."""
    known = json.loads(cache.read_text()) if cache is not None and cache.is_file() else {}
    scored = scoring_images(split)
    data_of, teachers_of, rows = {}, {}, []
    for run_dir in run_folders(roots):
        cache_key = f"{run_dir.resolve()}|{split}|{(run_dir / 'best.json').stat().st_mtime_ns}"
        if cache_key in known:
            rows.append({**known[cache_key], "combined": tuple(known[cache_key]["combined"])})
            continue
        try:
            settings = DistilSettings.from_dict(json.loads((run_dir / "config.json").read_text()))
        except (UserError, ValueError, TypeError, KeyError) as exc:  # a setting this version no longer has
            print(f"skipped {run_dir}: {exc}", file=sys.stderr)
            continue
        if len(json.loads((run_dir / "history.json").read_text())) < settings.train.epochs:
            print(f"skipped {run_dir}: not finished", file=sys.stderr)  # its best.json is an early epoch
            continue
        spec = settings.task_spec()
        if spec.data.kind != "fashion-mini":
            raise SystemExit(f"{run_dir}: task {spec.name} is not a fashion-mini task")
        key = (spec.name, settings.val_fraction, settings.train_per_class)
        if key not in data_of:
            data = load_task_data(spec, settings.data_dir, settings.val_fraction, settings.train_per_class)
            data_of[key] = replace(data, test=scored)
        data = data_of[key]
        student = load_any_student(run_dir / "best", spec.classes, "auto", data)
        scores = score_student(student, data, device)
        teachers_key = (spec.name, spec.teacher_folder)
        if teachers_key not in teachers_of:
            ensemble = load_ensemble(spec, device, PROJECT_ROOT, (data.mean, data.std))
            teachers_of[teachers_key] = teacher_scores(ensemble, scored, device, balance_on=data.train)
        teachers = teachers_of[teachers_key]
        rows.append({
            "task": spec.name, "teachers": settings.teacher_recipe, "student": settings.student,
            "epochs": settings.train.epochs, "augment": settings.train.augment, "method": settings.method,
            "teacher trust": settings.method_options.teacher_trust,
            "target gate": settings.method_options.target_gate,
            "class prior": settings.method_options.class_prior, "options": changed_options(settings),
            "training labels": settings.train.labels,
            "seed": settings.train.seed,
            "val": json.loads((run_dir / "best.json").read_text())["metrics"]["val_acc"],
            "accuracy": scores["accuracy"], "ece_ts": scores["ece_ts"],
            "combined": (teachers["union_accuracy"], teachers["uhc_union_accuracy"],
                         teachers["uhc_balanced_accuracy"]),
        })
        known[cache_key] = rows[-1]
    if cache is not None:
        cache.write_text(json.dumps(known))
    return rows


def run_table(rows: list[dict]) -> list[list]:
    return [[r["task"], r["teachers"], r["student"], r["epochs"], r["method"], r["options"],
             r["training labels"], r["seed"], percent(r["val"]), percent(r["accuracy"]), f"{r['ece_ts']:.3f}",
             " / ".join(percent(v) for v in r["combined"])] for r in rows]


TARGET_COLUMNS = ("roster", "teachers", "student", "schedule", "seeds", "CE, %",
                  "best teachers-combined line, %", "labeled default, %", "labeled target (max + 2)",
                  "label-free default, %", "label-free target (teachers + 1, >= CE)",
                  "largest ECE after T-scaling (labeled / label-free)")


def recorded(row: dict, field: str, option: str, default: str) -> str:
    """A setting of the run as its row records it, or, for rows cached before it was recorded,
    as its options say (an option left at its default is not in them)."""
    if field in row:
        return row[field]
    found = re.search(rf"{option} ([\w-]+)", row["options"])
    return found.group(1) if found else default


def class_prior_of(row: dict) -> str:
    return recorded(row, "class prior", "class_prior", "none")


def augment_of(row: dict) -> str:
    return recorded(row, "augment", "augment", STUDENT_AUGMENT)


# The recipes a run can be a line of, and each schedule's two lines (with labels, without): the
# defaults and their short forms. A line is held to CE on its own schedule.
RECIPE_LINES = (("labeled", LABELED_RECIPE), ("label-free", LABEL_FREE_RECIPE),
                ("labeled, short", SHORT_RECIPE), ("label-free, short", SHORT_LABEL_FREE_RECIPE))
SCHEDULES = (("default", "labeled", "label-free"), ("short", "labeled, short", "label-free, short"))
RECIPE_OF = dict(RECIPE_LINES)


def arm(row: dict) -> str | None:
    """Which line of the targets a run is: CE (any schedule), or the line whose recipe it ran
    (its method, settings, schedule and views)."""
    if row["method"] == "ce":
        return "ce"
    ran = (row["method"], row["training labels"], row["teacher trust"],
           row.get("target gate", "teachers"),  # no gate: a row cached before it was recorded
           class_prior_of(row), row["epochs"], augment_of(row))
    for name, recipe in RECIPE_LINES:
        values = recipe.values
        wanted = (values["method"], values.get("labels", LABELED), values.get("teacher_trust", "fixed"),
                  values.get("target_gate", "teachers"), values.get("class_prior", "none"), values["epochs"],
                  values.get("augment", STUDENT_AUGMENT))
        if ran == wanted:
            return name
    return None


def schedule_of(recipe: Recipe) -> tuple[int, str]:
    """The epochs and the views the student sees: what CE must share to be compared with it."""
    return recipe.values["epochs"], student_views(recipe.values.get("augment", STUDENT_AUGMENT))


def ce_runs(rows: list[dict], student: str, recipe: Recipe) -> list[dict]:
    """CE reads no teacher, so its runs (wherever they are) serve every roster of the same
    student; a line is compared with CE on its own schedule (epochs and the student's views)."""
    return [r for r in rows if arm(r) == "ce" and r["student"] == student
            and (r["epochs"], student_views(augment_of(r))) == schedule_of(recipe)]


def mean_of(runs: list[dict]) -> float | None:
    return statistics.mean(r["accuracy"] for r in runs) if runs else None


def line_verdict(runs: list[dict], ce_mean: float | None, best_line: float,
                 labeled: bool) -> tuple[list[str], str]:
    """A line's mean, its verdict against its target and its largest ECE: with labels max(CE, the
    best teachers-combined line) + 2; without, that line + 1 and no lower than CE."""
    if not runs or ce_mean is None:
        return ["", "not run"], "-"
    mean = mean_of(runs)
    bar = max(ce_mean, best_line) + 0.02 if labeled else best_line + 0.01
    met = mean >= bar and (labeled or mean >= ce_mean)
    verdict = "met" if met else "missed"
    return ([percent(mean), f"{verdict} ({100 * (mean - bar):+.2f} vs {percent(bar)})"],
            f"{max(r['ece_ts'] for r in runs):.3f}")


def target_table(rows: list[dict]) -> list[list]:
    """Per roster, teacher recipe, student and schedule: the mean over seeds of each line, each
    against CE on its own schedule (the CE column: the labeled line's)."""
    lines: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        which = arm(row)
        if which not in (None, "ce"):
            lines[(row["task"], row["teachers"], row["student"])][which].append(row)
    table = []
    for (task, teachers, student), found in sorted(lines.items()):
        best_line = max(next(iter(found.values()))[0]["combined"])
        for schedule, *pair in SCHEDULES:
            if not any(found.get(which) for which in pair):
                continue
            ce = {which: ce_runs(rows, student, RECIPE_OF[which]) for which in pair}
            labeled = pair[0]
            cells = [task, teachers, student, schedule, "/".join(str(len(found.get(k, ()))) for k in pair)
                     + f" (CE {len(ce[labeled])})",
                     "" if not ce[labeled] else percent(mean_of(ce[labeled])), percent(best_line)]
            eces = []
            for which in pair:
                verdict, ece = line_verdict(found.get(which, []), mean_of(ce[which]), best_line,
                                            labeled=which == labeled)
                cells += verdict
                eces.append(ece)
            cells.append(" / ".join(eces))
            table.append(cells)
    return table


CONFIGS = "../../../configs"  # from docs/benchmarks/data/, where the table is written
LINE_NAMES = {"labeled": "**default**", "label-free": "`--labels none`",
              "labeled, short": "short", "label-free, short": "short, `--labels none`"}


def mean_sd(values: list[float], unit: str = "run") -> str:
    if not values:
        return "not run"
    spread = f" ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else ""
    runs = f"{len(values)} {unit}" + ("s" if len(values) > 1 else "")
    return f"{100 * statistics.mean(values):.2f}{spread} ({runs})"


def students_of(rows: list[dict]) -> list[str]:
    """The students scored, the default one first: the headline's columns."""
    return sorted({r["student"] for r in rows}, key=lambda name: (name != "mobilenetv3_small", name))


def headline_table(rows: list[dict]) -> list[list]:
    """README's table: per schedule, CE (it reads no teacher) once, then per recipe and teacher
    recipe, mean ± sd over every roster and seed scored; the teachers combined (UHC balanced, the
    best line here) per teacher recipe, over the rosters. The default schedule always shows; a
    short one where it has runs."""
    students = students_of(rows)
    recipes = sorted({r["teachers"] for r in rows if arm(r) not in (None, "ce")},
                     key=lambda name: (name != "default", name))

    def cells(chosen: list[dict]) -> list[str]:
        return [mean_sd([r["accuracy"] for r in chosen if r["student"] == student]) for student in students]

    table = []
    for schedule, *pair in SCHEDULES:
        ran = [r for r in rows if arm(r) in pair]
        if schedule != "default" and not ran:
            continue
        epochs, views = schedule_of(RECIPE_OF[pair[0]])
        ce = [r for student in students for r in ce_runs(rows, student, RECIPE_OF[pair[0]])]
        table.append([f"`ce` (no teachers), {epochs} epochs, {views}", "—", "yes", *cells(ce)])
        for which in pair:
            recipe = RECIPE_OF[which]
            link = f"[{recipe.config_file}]({CONFIGS}/{recipe.name}.toml)"
            name = f"{LINE_NAMES[which]}, {epochs} epochs ({link})"
            labels = "none" if recipe.values.get("labels", LABELED) != LABELED else "yes"
            for teachers in recipes:
                table.append([name, f"`{teachers}`", labels,
                              *cells([r for r in ran if arm(r) == which and r["teachers"] == teachers])])
    for teachers in recipes:
        combined = {r["task"]: r["combined"][2] for r in rows
                    if arm(r) not in (None, "ce") and r["teachers"] == teachers}
        table.append(["teachers combined (UHC balanced)", f"`{teachers}`", "—",
                      *[mean_sd(list(combined.values()), "roster")] * len(students)])
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="+", type=Path, help="folders holding run folders")
    parser.add_argument("--targets", action="store_true", help="the targets table instead of one row per run")
    parser.add_argument("--headline", action="store_true",
                        help="README's table: each recipe's mean per student")
    parser.add_argument("--split", choices=SCORING_SPLITS, default="test",
                        help="the full test split, or 10,000 training images fashion-mini never uses")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache", type=Path, help="JSON file of scores kept between calls")
    args = parser.parse_args(argv)
    rows = score_runs(args.roots, torch.device(args.device), args.split, args.cache)
    writer = csv.writer(sys.stdout, lineterminator="\n")
    if args.headline:
        writer.writerow(["recipe", "teachers", "labels",
                         *(f"`{s}`, {args.split} %, mean ± sd" for s in students_of(rows))])
        writer.writerows(headline_table(rows))
    else:
        writer.writerow(TARGET_COLUMNS if args.targets else columns(args.split))
        writer.writerows(target_table(rows) if args.targets else run_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
