"""Every run of the given comparisons as one table row, each beside its teachers combined
(docs/benchmarks/quality.md renders the CSV with scripts/render_docs.py).

    python scripts/quality_csv.py reports/f28/screen > docs/benchmarks/data/quality-screen.csv

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


def main(folders: list[str]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
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
