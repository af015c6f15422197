"""How large an ECE a perfectly calibrated classifier shows on a test set of n images.

The evaluation's ECE (15 equal-width bins, torchmetrics) is an estimate: on a small test set
the bins hold few images, and their accuracy scatters around their confidence even when the
model is calibrated exactly. This script draws such models (confidence from a Beta law whose
mean is the stated accuracy; each prediction right with probability equal to its confidence,
so calibration is perfect by construction) and measures their ECE as the harness does, to say
which ECE target a test set of a given size can confirm.

    python bench/bench_ece_floor.py --out docs/benchmarks/data/ece-floor.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

from amalgam.models.metrics import ECE_BINS, expected_calibration_error

CLASSES = 10
TARGET = 0.03


def calibrated_logits(n: int, accuracy: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of a perfectly calibrated 10-class model whose mean confidence is `accuracy`,
    and labels drawn to match: the top class is right with probability equal to its confidence
    (draws from torch's global generator, seeded once by `floor_rows`)."""
    concentration = 6.0
    beta = torch.distributions.Beta(torch.tensor(accuracy * concentration),
                                    torch.tensor((1 - accuracy) * concentration))
    confidence = beta.sample((n,)).clamp(1.0 / CLASSES + 1e-3, 1 - 1e-6)
    probs = ((1 - confidence) / (CLASSES - 1)).unsqueeze(1).repeat(1, CLASSES)
    probs[:, 0] = confidence
    right = torch.rand(n) < confidence
    return probs.log(), torch.where(right, 0, torch.randint(1, CLASSES, (n,)))


def floor_rows(sizes: list[int], accuracies: list[float], trials: int, seed: int) -> list[dict]:
    torch.manual_seed(seed)
    rows = []
    for n in sizes:
        for accuracy in accuracies:
            eces = torch.tensor([expected_calibration_error(*calibrated_logits(n, accuracy), CLASSES)
                                 for _ in range(trials)])
            rows.append({
                "test images": n,
                "mean confidence": f"{accuracy:.2f}",
                "mean ECE of a perfectly calibrated model": f"{float(eces.mean()):.3f}",
                "95th percentile": f"{float(eces.quantile(0.95)):.3f}",
                f"share of draws with ECE <= {TARGET}": f"{float((eces <= TARGET).float().mean()):.2f}",
            })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="300,600,2000,10000", help="test-set sizes")
    parser.add_argument("--accuracies", default="0.80,0.90", help="mean confidences (= accuracies)")
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="CSV to write (default: print)")
    args = parser.parse_args(argv)
    rows = floor_rows([int(s) for s in args.sizes.split(",")], [float(a) for a in args.accuracies.split(",")],
                      args.trials, args.seed)
    out = args.out.open("w", newline="", encoding="utf-8") if args.out else sys.stdout
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    if args.out:
        out.close()
    print(f"{ECE_BINS} bins, {CLASSES} classes, {args.trials} draws per row", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
