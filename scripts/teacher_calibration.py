"""Does calibrating each teacher before combining them make the combination better?

Each teacher gets one temperature, fitted (NLL, as the harness fits a student's) on the
validation images of its own classes; the teachers combined (UHC, and UHC balanced over the
training images as `--class-prior uniform` balances it) are then scored with and without those
temperatures on 10,000 training images fashion-mini never uses (`held_out_from_mini`): validation
data, no test image is read.

    python scripts/teacher_calibration.py fashion-mini-roster100 fashion-mini-roster101 \
        > docs/benchmarks/data/teacher-calibration.csv
"""

from __future__ import annotations

import csv
import sys

import torch

from amalgam import PROJECT_ROOT
from amalgam.distill.losses import uhc_union_probs
from amalgam.distill.methods import MethodOptions, build_method
from amalgam.distill.teachers.loading import load_ensemble
from amalgam.distill.teachers.store import compute_teacher_logits
from amalgam.models.metrics import fit_temperature
from amalgam.tasks.builtin import get_task
from amalgam.tasks.fashion import held_out_from_mini
from amalgam.tasks.loader import load_task_data


def own_class_temperatures(logits: torch.Tensor, labels: torch.Tensor, roster) -> torch.Tensor:
    """[K] one temperature per teacher, fitted on the images of its own classes."""
    temperatures = []
    for k in range(len(roster.teacher_names)):
        own = roster.coverage[k, labels]
        width = int(roster.local_mask[k].sum())
        local = {int(g): i for i, g in enumerate(roster.local_to_global[k, :width])}
        local_labels = torch.tensor([local[int(y)] for y in labels[own]])
        temperatures.append(fit_temperature(logits[own, k, :width], local_labels))
    return torch.tensor(temperatures)


def balanced_accuracy(train_logits, logits, labels, roster) -> float:
    balanced = build_method("amalgam-kd", roster, MethodOptions(class_prior="uniform"))
    balanced.fit_to_training_set(train_logits)
    return float((balanced.targets(logits, 1.0).argmax(1) == labels).float().mean())


def main(tasks: list[str]) -> int:
    held_out = held_out_from_mini()
    device = torch.device("cpu")
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["roster", "temperature per teacher (own classes' validation)",
                     "UHC, held-out %: as trained / calibrated",
                     "UHC balanced, held-out %: as trained / calibrated"])
    for task in tasks:
        spec = get_task(task)
        data = load_task_data(spec)
        ensemble = load_ensemble(spec, device, PROJECT_ROOT, (data.mean, data.std))
        roster = ensemble.roster
        val, train, scored = (compute_teacher_logits(ensemble, images, device, quiet=True)
                              for images in (data.val, data.train, held_out))
        temperatures = own_class_temperatures(val, data.val.labels, roster)
        scale = temperatures.view(1, -1, 1)
        uhc = [float((uhc_union_probs(z, roster).argmax(1) == held_out.labels).float().mean())
               for z in (scored, scored / scale)]
        balanced = [balanced_accuracy(t, z, held_out.labels, roster)
                    for t, z in ((train, scored), (train / scale, scored / scale))]
        shown = [" / ".join(f"{100 * a:.2f}" for a in pair) for pair in (uhc, balanced)]
        writer.writerow([task, " / ".join(f"{t:.2f}" for t in temperatures.tolist()), *shown])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:] or ["fashion-mini-roster100", "fashion-mini-roster101"]))
