"""scripts/label_free_targets.py: label propagation over the kNN graph, by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "label_free_targets.py"
spec = importlib.util.spec_from_file_location("label_free_targets", SCRIPT)
label_free_targets = importlib.util.module_from_spec(spec)
spec.loader.exec_module(label_free_targets)


def test_propagation_reaches_the_fixed_point_of_q_equals_a_w_q_plus_the_start():
    start = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    neighbours = torch.tensor([[0, 2], [1, 2], [2, 0]])  # W: each row averages itself and one other
    w = torch.zeros(3, 3)
    w[torch.arange(3).repeat_interleave(2), neighbours.flatten()] = 0.5
    a = 0.8
    fixed_point = (1 - a) * torch.linalg.solve(torch.eye(3) - a * w, start)
    got = label_free_targets.propagated(start, neighbours, a)
    torch.testing.assert_close(got, fixed_point, atol=0.02, rtol=0)  # 0.8^20 of the way left
    torch.testing.assert_close(got.sum(dim=1), torch.ones(3))
    assert label_free_targets.percent_right(got, torch.tensor([0, 1, 0])) == "100.00"
