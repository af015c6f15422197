"""The UHC target's solver: the Woodbury Newton step against the dense solve it replaced.

`uhc_union_probs` (the default method's target) runs damped Newton on each batch. The dense
reference (tests/uhc_reference.py, the algorithm as it was) solves a [B, C, C] system per
step, O(B·C³); the product's step solves a K×K system, O(B·(Σ_k |C_k| + K³) + pairs of
teachers on a shared class). Both run here on one CPU thread, float64, on random teacher
logits (3·N(0, 1)) over random rosters where every class has a teacher and the surplus slots
make teachers overlap.

The dense solver is run on the whole batch only where that fits `--dense-budget` seconds.
Elsewhere it is timed on a few images and its batch time estimated from them: its cost is
linear in images × Newton steps, and the steps are scaled to its limit (30), which a batch
reaches as soon as one image fails to converge (an upper bound otherwise). The `dense`
column says which. The max difference is over the images the dense solver ran and brought
to the optimum (`images_compared`), and over the whole q: where teachers are linked only
through classes of negligible mass, the split of q between them is not pinned by the
objective, and the solvers may differ there while both are at the optimum (see
tests/test_uhc_solver.py). The `*_not_converged` columns count the images left with
max_c |gradient_c| ≥ 1e-9 (the product's UHC_TOLERANCE), out of the images each solver ran.
The machine's 1-minute load average is recorded with each row: times on a shared machine
are only comparable within a row.

    OMP_NUM_THREADS=1 python bench/bench_uhc_solver.py --quick
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from amalgam.distill.losses.uhc import UHC_TOLERANCE, _uhc_solve  # noqa: E402
from tests.uhc_reference import MAX_STEPS, dense_uhc_solve, optimality, random_logits, random_roster  # noqa: E402

ROSTERS = [(10, 3, 4), (100, 5, 25), (200, 8, 30), (1000, 10, 120), (1000, 30, 40)]  # C, K, ~classes each
FIELDS = ["classes", "teachers", "classes_per_teacher", "batch", "newton_steps", "dense_ms_per_batch",
          "dense", "woodbury_ms_per_batch", "speedup", "max_abs_diff", "images_compared",
          "dense_not_converged", "woodbury_not_converged", "load_avg_1min"]


def timed(solve, repeats: int) -> tuple[float, object]:
    """Median seconds over `repeats` runs, and the last run's result."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = solve()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def fast_probs(logits: torch.Tensor, roster) -> tuple[torch.Tensor, int]:
    u, steps = _uhc_solve(logits, roster, 1.0)
    return torch.softmax(u, dim=1), steps


def not_converged(q: torch.Tensor, logits: torch.Tensor, roster) -> str:
    """'n/B': images whose gradient is still at or above UHC_TOLERANCE."""
    gradient = optimality(q, logits, roster)[0]
    return f"{int((gradient >= UHC_TOLERANCE).sum())}/{q.shape[0]}"


def measure(num_classes: int, teachers: int, per_teacher: int, args: argparse.Namespace) -> dict:
    generator = torch.Generator().manual_seed(args.seed + num_classes + teachers)
    roster = random_roster(num_classes, teachers, per_teacher, generator)
    logits = random_logits(args.batch, roster, generator)
    fast_seconds, (fast_q, steps) = timed(lambda: fast_probs(logits, roster), args.repeats)

    # Probe the dense solver on a few images first; run the whole batch only if it fits.
    probe = min(args.batch, args.probe)
    probe_seconds, (probe_q, probe_steps) = timed(lambda: dense_uhc_solve(logits[:probe], roster), 1)
    estimate = probe_seconds * (args.batch / probe) * (MAX_STEPS / max(probe_steps, 1))
    if probe == args.batch or estimate <= args.dense_budget:
        dense_seconds, (dense_q, dense_steps) = timed(lambda: dense_uhc_solve(logits, roster), 1)
        ran, how = args.batch, f"measured on {args.batch} images"
        assert dense_steps >= steps, (dense_steps, steps)
    else:
        dense_seconds, ran, dense_q = estimate, probe, probe_q
        how = f"estimated from {probe} images ({probe_steps} steps)"
    # Compared only where the dense solver converged: elsewhere it is not at the optimum.
    converged = optimality(dense_q, logits[:ran], roster)[0] < UHC_TOLERANCE
    compared = int(converged.sum())
    difference = (fast_q[:ran] - dense_q)[converged].abs().max().item() if compared else float("nan")
    return {
        "classes": num_classes, "teachers": teachers,
        "classes_per_teacher": round(float(roster.local_mask.sum(dim=1).double().mean()), 1),
        "batch": args.batch, "newton_steps": steps,
        "dense_ms_per_batch": round(1000 * dense_seconds, 1), "dense": how,
        "woodbury_ms_per_batch": round(1000 * fast_seconds, 1),
        "speedup": round(dense_seconds / fast_seconds, 1),
        "max_abs_diff": f"{difference:.1e}", "images_compared": compared,
        "dense_not_converged": f"{ran - compared}/{ran}",
        "woodbury_not_converged": not_converged(fast_q, logits, roster),
        "load_avg_1min": round(os.getloadavg()[0], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one timing run each, dense probed on 2 images with a 10 s budget")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timing runs of the fast solver (median)")
    parser.add_argument("--probe", type=int, default=4, help="images the dense solver is first timed on")
    parser.add_argument("--dense-budget", type=float, default=60.0,
                        help="seconds the dense solver may take on a whole batch before it is estimated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "data" / "uhc_solver.csv")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.probe, args.dense_budget = 1, 2, 10.0
    torch.set_num_threads(1)

    rows = []
    header = (f"{'C':>5} {'K':>3} {'n/K':>6} {'steps':>5} {'dense ms':>10} {'fast ms':>8} {'ratio':>7} "
              f"{'max|dq|':>8} {'unconv d/w':>11} {'load':>5}  dense")
    print(header)
    for num_classes, teachers, per_teacher in ROSTERS:
        row = measure(num_classes, teachers, per_teacher, args)
        rows.append(row)
        print(f"{row['classes']:>5} {row['teachers']:>3} {row['classes_per_teacher']:>6} "
              f"{row['newton_steps']:>5} {row['dense_ms_per_batch']:>10.1f} "
              f"{row['woodbury_ms_per_batch']:>8.1f} {row['speedup']:>7.1f} "
              f"{row['max_abs_diff']:>8} "
              f"{row['dense_not_converged'] + ' ' + row['woodbury_not_converged']:>11} "
              f"{row['load_avg_1min']:>5}  {row['dense']}", flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
