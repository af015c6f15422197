"""How often the label-free target names the right class, on the training images it is built on.

The label-free student learns nothing but this target, so its accuracy on the training images is
about the most the student can take from it. Per roster and teacher recipe: the teachers combined
(UHC), balanced over the training images (`--class-prior uniform`), then averaged over each image's
K nearest training images in the teachers' features (`--target-neighbours K`, one step), and the
same neighbours applied as label propagation run to convergence (Zhou et al., NIPS 2003: q = a W q
+ (1 - a) q0). The training labels are read only to score the targets. Screening rosters only:

    python scripts/label_free_targets.py 100 101 > docs/benchmarks/data/label-free-targets.csv
"""

from __future__ import annotations

import argparse
import csv
import sys

import torch

from amalgam import PROJECT_ROOT
from amalgam.distill.engine.views import to_unit_float
from amalgam.distill.losses import uhc_union_probs
from amalgam.distill.losses.class_balance import fit_class_prior
from amalgam.distill.losses.neighbours import nearest_neighbours, neighbour_mean, pooled_features
from amalgam.distill.teachers.loading import load_ensemble
from amalgam.tasks.builtin import get_task
from amalgam.tasks.loader import load_task_data
from amalgam.tasks.teacher_recipes import with_teacher_recipe

NEIGHBOURS = (10, 20, 40)
PROPAGATION_STEPS = 20  # a = 0.8: 0.8^20 ~ 1 % of the first step's change is left


def propagated(start: torch.Tensor, neighbours: torch.Tensor, a: float) -> torch.Tensor:
    """Label propagation over the kNN graph, from the balanced combination `start`."""
    q = start
    for _ in range(PROPAGATION_STEPS):
        q = a * neighbour_mean(q, neighbours) + (1.0 - a) * start
    return q


def percent_right(probs: torch.Tensor, labels: torch.Tensor) -> str:
    return f"{100 * float((probs.argmax(dim=1) == labels).float().mean()):.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rosters", nargs="+", help="fashion-mini roster numbers")
    parser.add_argument("--recipes", default="default,more-data", help="teacher recipes, comma-separated")
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["task", "teachers", "UHC, %", "UHC balanced, %",
                     *(f"balanced, K = {k}{' (the recipe)' if k == 20 else ''}, %" for k in NEIGHBOURS),
                     "balanced, K = 20 propagated (a = 0.8), %"])
    for roster in args.rosters:
        for recipe in args.recipes.split(","):
            spec = with_teacher_recipe(get_task(f"fashion-mini-roster{roster}"), recipe)
            data = load_task_data(spec)
            ensemble = load_ensemble(spec, device, PROJECT_ROOT, (data.mean, data.std))
            logits, features = [], []
            with torch.no_grad():
                for index in torch.arange(len(data.train)).split(256):
                    batch_logits, maps = ensemble.forward_with_features(
                        to_unit_float(data.train.images[index], device))
                    logits.append(batch_logits.float())
                    features.append(pooled_features(maps))
            combined = uhc_union_probs(torch.cat(logits), spec.roster(), 1.0)
            _, balanced, _ = fit_class_prior(combined, "uniform", None)
            features = torch.cat(features)
            labels = data.train.labels
            near = {k: nearest_neighbours(features, k) for k in NEIGHBOURS}  # each search once
            smoothed = [neighbour_mean(balanced, near[k]) for k in NEIGHBOURS]
            spread = propagated(balanced, near[20], 0.8)
            scored = [combined, balanced, *smoothed, spread]
            writer.writerow([spec.name, recipe, *(percent_right(q, labels) for q in scored)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
