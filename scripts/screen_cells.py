"""One row per screening cell (roster, teacher recipe, student), one column per arm, from the
per-run scores `scripts/full_test_scores.py` writes: the side-by-side a schedule or recipe
screen is decided on, written by a script rather than copied by hand.

An arm is `LABEL=METHOD|EPOCHS|OPTIONS`: the rows whose method, epochs and options column
(exactly, "" for none) match. CE reads no teacher, so a CE arm fills every cell of its student
whatever the roster or teacher recipe of the run it came from. A cell with no matching run is
left empty; two matching runs (seeds) are averaged.

    python scripts/screen_cells.py docs/benchmarks/data/quality-held-out-patient.csv \\
        --arm "default, 24 ep=fitnet+uhc-ka|24|teacher_trust per-class; class_prior uniform" \\
        --arm "CE, 96 ep crop-flip=ce|96|augment crop-flip" > docs/benchmarks/data/quality-patient-cells.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ACCURACY_PREFIX = "held-out accuracy"  # or "test accuracy": whichever split the scores are on
COMBINED_PREFIX = "teachers combined"


@dataclass(frozen=True)
class Arm:
    label: str
    method: str
    epochs: str
    options: str

    @classmethod
    def parse(cls, text: str) -> Arm:
        label, sep, selector = text.partition("=")
        parts = selector.split("|")
        if not sep or len(parts) != 3 or not label.strip():
            raise SystemExit(f"error: --arm {text!r}: write it as LABEL=METHOD|EPOCHS|OPTIONS")
        return cls(label.strip(), *(part.strip() for part in parts))

    def matches(self, row: dict) -> bool:
        return (row["method"], row["epochs"], row["options"]) == (self.method, self.epochs, self.options)


def column(rows: list[dict], prefix: str) -> str:
    names = [name for name in rows[0] if name.startswith(prefix)] if rows else []
    if len(names) != 1:
        raise SystemExit(f"error: the scores need exactly one column starting with {prefix!r}")
    return names[0]


def cells_table(rows: list[dict], arms: list[Arm]) -> list[list[str]]:
    accuracy, combined = column(rows, ACCURACY_PREFIX), column(rows, COMBINED_PREFIX)
    cells: dict[tuple[str, str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    balanced: dict[tuple[str, str, str], str] = {}
    for row in rows:
        if row["method"] != "ce":
            key = (row["task"], row["teachers"], row["student"])
            balanced[key] = row[combined].split(" / ")[-1]
    for row in rows:
        for arm in arms:
            if not arm.matches(row):
                continue
            keys = [key for key in balanced if key[2] == row["student"]] if row["method"] == "ce" else \
                [(row["task"], row["teachers"], row["student"])]
            for key in keys:
                cells[key][arm.label].append(float(row[accuracy]))
    header = ["task", "teachers", "student", *(arm.label for arm in arms), "teachers combined, UHC balanced"]
    table = [header]
    for key in sorted(balanced, key=lambda k: (k[2], k[1], k[0])):
        scores = cells[key]
        table.append([*key, *(f"{sum(s) / len(s):.2f}" if (s := scores.get(arm.label)) else ""
                              for arm in arms), balanced[key]])
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scores", nargs="+", type=Path, help="CSV files written by full_test_scores.py")
    parser.add_argument("--arm", action="append", required=True, type=Arm.parse,
                        help="LABEL=METHOD|EPOCHS|OPTIONS (repeat; columns in this order)")
    args = parser.parse_args()
    rows = []
    for path in args.scores:
        if not path.is_file():
            raise SystemExit(f"error: {path}: no such file; write it with scripts/full_test_scores.py")
        with path.open(newline="") as handle:
            rows.extend(csv.DictReader(handle))
    csv.writer(sys.stdout, lineterminator="\n").writerows(cells_table(rows, args.arm))


if __name__ == "__main__":
    main()
