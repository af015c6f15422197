"""Where saved students' test errors are: between classes a teacher knows together, or not.

For compare runs made before compare.json carried this split. Usage:
    python scripts/error_split.py --task fashion --train-per-class 600 reports/fashion/runs/*/*_seed*
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from amalgam.harness.evaluate import load_any_student, predict_logits
from amalgam.models.metrics import teacher_pair_errors
from amalgam.tasks.builtin import get_task
from amalgam.tasks.loader import load_task_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--train-per-class", type=int)
    parser.add_argument("--data-dir")
    parser.add_argument("runs", nargs="+", type=Path, help="run directories holding best.safetensors")
    args = parser.parse_args()
    spec = get_task(args.task)
    data = load_task_data(spec, args.data_dir, train_per_class=args.train_per_class)
    cpu = torch.device("cpu")
    print("run | accuracy % | errors, a teacher knows both % | errors, no teacher knows both %")
    for run in args.runs:
        student = load_any_student(run / "best.safetensors", spec.classes)
        predictions = predict_logits(student.predict, student.model_input, data.test, cpu).argmax(1)
        split = teacher_pair_errors(predictions, data.test.labels, spec.roster().coverage)
        accuracy = float((predictions == data.test.labels).float().mean())
        print(f"{run.name} | {100 * accuracy:.2f} | {100 * split['errors_shared_teacher']:.2f} | "
              f"{100 * split['errors_no_shared_teacher']:.2f}")


if __name__ == "__main__":
    main()
