"""The learning-rate schedules: the reference app's StepLR and a cosine decay over the run."""

from __future__ import annotations

import pytest
import torch

from amalgam.distill.engine.optim import make_scheduler
from amalgam.distill.engine.train_config import TrainConfig
from amalgam.errors import UserError


def lrs(config: TrainConfig) -> list[float]:
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = make_scheduler(optimizer, config)
    seen = []
    for _ in range(config.epochs):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_cosine_starts_at_lr_and_decays_to_near_zero():
    seen = lrs(TrainConfig(epochs=12, lr=1e-3, scheduler="cosine"))
    assert seen[0] == pytest.approx(1e-3)
    assert seen[6] == pytest.approx(0.5e-3)  # halfway down the cosine
    assert seen[-1] == pytest.approx(1e-3 * 0.5 * (1 + torch.cos(torch.tensor(11 / 12 * torch.pi)).item()))
    assert all(a > b for a, b in zip(seen, seen[1:], strict=False))


def test_step_is_the_seed_schedule():
    seen = lrs(TrainConfig(epochs=5, lr=1e-3, scheduler="step", scheduler_step=2, scheduler_gamma=0.5))
    assert seen == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4])


def test_unknown_schedule_is_refused():
    with pytest.raises(UserError, match="--scheduler must be one of"):
        TrainConfig(scheduler="linear")
