"""How strong each teacher recipe's teachers are, alone and combined, on 10,000 images.

Per roster and teacher recipe: each teacher's accuracy on the images of its own classes, and the
three teachers-combined lines (per-class mean of probabilities, UHC, UHC balanced over the
training images) on the union. Screening rosters are scored on the 10,000 held-out training
images (`held_out_from_mini`), the rosters a benchmark reports on, on Fashion-MNIST's test split:

    python scripts/teacher_strength.py --split held-out 100 101 \
        > docs/benchmarks/data/teacher-strength-screen.csv
    python scripts/teacher_strength.py --split test 500 501 502 > docs/benchmarks/data/teacher-strength.csv
"""

from __future__ import annotations

import argparse
import csv
import sys

import torch

from amalgam import PROJECT_ROOT
from amalgam.distill.teachers.loading import load_ensemble
from amalgam.harness.teacher_scores import teacher_scores
from amalgam.tasks.builtin import get_task
from amalgam.tasks.fashion import SCORING_SPLITS, scoring_images
from amalgam.tasks.loader import load_task_data
from amalgam.tasks.teacher_recipes import with_teacher_recipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rosters", nargs="+", help="fashion-mini roster numbers")
    parser.add_argument("--recipes", default="default,more-data", help="teacher recipes, comma-separated")
    parser.add_argument("--split", choices=SCORING_SPLITS, default="test")
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    scored = scoring_images(args.split)
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["roster", "teachers", f"each teacher on its own classes ({args.split}), %",
                     f"teachers combined: mean / UHC / UHC balanced ({args.split}), %"])
    for roster in args.rosters:
        for recipe in args.recipes.split(","):
            spec = with_teacher_recipe(get_task(f"fashion-mini-roster{roster}"), recipe)
            data = load_task_data(spec)
            ensemble = load_ensemble(spec, device, PROJECT_ROOT, (data.mean, data.std))
            scores = teacher_scores(ensemble, scored, device, balance_on=data.train)
            own = " / ".join(f"{100 * v:.2f}" for v in scores["per_teacher"].values())
            combined = " / ".join(f"{100 * scores[k]:.2f}" for k in
                                  ("union_accuracy", "uhc_union_accuracy", "uhc_balanced_accuracy"))
            writer.writerow([spec.name, recipe, own, combined])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
