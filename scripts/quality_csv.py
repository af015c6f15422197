"""Every run of the given comparisons as one table row, each beside its teachers combined
(docs/benchmarks/quality.md renders the CSV with scripts/render_docs.py).

    python scripts/quality_csv.py reports/quality/screen > docs/benchmarks/data/quality-screen.csv
    python scripts/quality_csv.py --targets reports/quality/report > docs/benchmarks/data/quality-targets.csv

Finds every compare.json under the folders given, or, for a comparison stopped before it wrote
one, every run's history.json (validation only: such a run has no test score). One row per arm
and seed; percentages with two decimals.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

COLUMNS = ("task", "teachers", "student", "epochs", "method", "training labels", "seed",
           "val accuracy, %", "test accuracy, %", "ECE after T-scaling",
           "teachers combined (UHC), test %", "teachers combined (UHC balanced), test %")


def percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def run_seed(report_dir: Path, run_name: str) -> str:
    """The training seed of a comparison's run, from its config.json (shared runs: not here)."""
    for config in sorted(report_dir.glob(f"runs/*/{run_name}/config.json")):
        return str(json.loads(config.read_text())["train"]["seed"])
    return ""


def rows_of_report(path: Path):
    report = json.loads(path.read_text())
    for arm, stats in report["methods"].items():
        method, _, labels = arm.partition(":")
        slug = f"{method}-nolabels" if labels == "none" else method  # as compare names its run folders
        for number, run in enumerate(stats["per_seed"]):
            seed = run_seed(path.parent, f"{slug}_seed{number}")
            yield [report["task"], report.get("teacher_recipe", "default"), report["student"],
                   report["epochs"], method, labels or "train", seed, percent(run["val_accuracy"]),
                   percent(run["accuracy"]),
                   f"{run['ece_ts']:.3f}", percent(report["teachers_uhc_accuracy"]),
                   percent(report.get("teachers_uhc_balanced_accuracy"))]


def rows_of_run(path: Path):
    config = json.loads((path.parent / "config.json").read_text())
    history = json.loads(path.read_text())
    best = max(row["val_acc"] for row in history)
    yield [config["task"], config.get("teacher_recipe", "default"), config["student"],
           f"{len(history)} of {config['train']['epochs']}", config["method"], config["train"]["labels"],
           config["train"]["seed"], percent(best), "", "", "", ""]


TARGET_COLUMNS = ("roster", "teachers", "CE, %", "best teachers-combined line, %", "labeled default, %",
                  "labeled target (max + 2)", "label-free default, %",
                  "label-free target (teachers + 1, >= CE)", "ECE after T-scaling (labeled / label-free)")
LABELED_ARM, LABEL_FREE_ARM = "fitnet+uhc-ka", "fitnet+amalgam-kd:none"


def target_rows(folder: Path):
    """Per roster and teacher recipe: the issue's targets against the runs found (means over
    seeds). CE reads no teacher, so one CE arm with the same epochs serves every roster."""
    reports = [json.loads(path.read_text()) for path in sorted(folder.rglob("compare.json"))]
    ce = next((r["methods"]["ce"] for r in reports if "ce" in r["methods"]), None)
    cells: dict[tuple[str, str], dict] = {}
    for report in reports:
        key = (report["task"], report.get("teacher_recipe", "default"))
        entry = cells.setdefault(key, {"teachers": 0.0})
        lines = [report.get(k) for k in ("teachers_union_accuracy", "teachers_uhc_accuracy",
                                         "teachers_uhc_balanced_accuracy")]
        entry["teachers"] = max([entry["teachers"], *(v for v in lines if v is not None)])
        entry.update({arm: stats for arm, stats in report["methods"].items() if arm != "ce"})
    for (task, recipe), entry in sorted(cells.items()):
        ce_acc = ce["accuracy"]["mean"] if ce else None
        labeled, free = entry.get(LABELED_ARM), entry.get(LABEL_FREE_ARM)
        bar = max(entry["teachers"], ce_acc or 0.0) + 0.02
        labeled_cell = verdict(labeled, bar) if labeled else "not run"
        free_bar = max(entry["teachers"] + 0.01, ce_acc or 0.0)
        free_cell = verdict(free, free_bar) if free else "not run"
        ece = " / ".join(f"{s['ece_ts']['mean']:.3f}" if s else "-" for s in (labeled, free))
        yield [task, recipe, percent(ce_acc), percent(entry["teachers"]),
               percent(labeled["accuracy"]["mean"]) if labeled else "", labeled_cell,
               percent(free["accuracy"]["mean"]) if free else "", free_cell, ece]


def verdict(stats: dict, bar: float) -> str:
    margin = 100 * (stats["accuracy"]["mean"] - bar)
    return f"{'met' if margin >= 0 else 'missed'} ({margin:+.2f} vs {100 * bar:.2f})"


def main(folders: list[str]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    if folders and folders[0] == "--targets":
        writer.writerow(TARGET_COLUMNS)
        for folder in map(Path, folders[1:]):
            writer.writerows(target_rows(folder))
        return
    writer.writerow(COLUMNS)
    for folder in map(Path, folders):
        reports = sorted(folder.rglob("compare.json"))
        done = {p.parent for p in reports}
        for path in reports:
            writer.writerows(rows_of_report(path))
        for path in sorted(folder.rglob("history.json")):
            if not any(parent in done for parent in path.parents):
                writer.writerows(rows_of_run(path))


if __name__ == "__main__":
    main(sys.argv[1:])
