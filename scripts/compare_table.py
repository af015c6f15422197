"""A benchmark table (CSV) from the compare.json files `train.py compare` wrote.

    python scripts/compare_table.py scores OUT.csv REPORT.json [REPORT.json ...]
    python scripts/compare_table.py errors OUT.csv REPORT.json [REPORT.json ...]

`scores`: one row per method, accuracy (%) as mean ± std over seeds and per seed, then macro-F1,
NLL, ECE and ECE after temperature scaling; `errors`: the % of test images misclassified between
two classes some teacher knows together, and between two no teacher does (mean over seeds). The
reports are read in the order given; the CSV is what `scripts/render_docs.py` renders into a
page, so a table's figures are the report's, rounded, never retyped.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def _mean_std(entry: dict, scale: float, digits: int) -> str:
    return f"{scale * entry['mean']:.{digits}f} ± {scale * entry['std']:.{digits}f}"


def score_rows(reports: list[dict]) -> list[list[str]]:
    rows = [["method", "accuracy (%)", "per seed", "macro-F1", "NLL", "ECE", "ECE after T-scaling"]]
    for report in reports:
        for method, scores in report["methods"].items():
            per_seed = " / ".join(f"{100 * run:.2f}" for run in scores["accuracy"]["runs"])
            rows.append([method, _mean_std(scores["accuracy"], 100, 2), per_seed,
                         *(_mean_std(scores[key], 1, 3) for key in ("macro_f1", "nll", "ece", "ece_ts"))])
    return rows


def error_rows(reports: list[dict]) -> list[list[str]]:
    rows = [["method", "errors, a teacher knows both classes", "errors, no teacher knows both classes"]]
    for report in reports:
        for method, scores in report["methods"].items():
            rows.append([method, f"{100 * scores['errors_shared_teacher']['mean']:.2f}",
                         f"{100 * scores['errors_no_shared_teacher']['mean']:.2f}"])
    return rows


TABLES = {"scores": score_rows, "errors": error_rows}


def write_table(kind: str, out: Path, report_paths: list[Path]) -> None:
    reports = [json.loads(path.read_text(encoding="utf-8")) for path in report_paths]
    with out.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(TABLES[kind](reports))


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] not in TABLES:
        sys.exit(f"usage: python scripts/compare_table.py {{{'|'.join(TABLES)}}} OUT.csv REPORT.json ...")
    write_table(sys.argv[1], Path(sys.argv[2]), [Path(arg) for arg in sys.argv[3:]])
