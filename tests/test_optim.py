"""timm's optimiser and scheduler factories behind --opt / --sched: the reference app's defaults kept,
the method's helpers optimised, warm-up, and schedules that resume."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from amalgam.distill.engine.optim import make_optimizer, make_scheduler
from amalgam.distill.engine.train_config import TrainConfig
from amalgam.distill.engine.trainer import Trainer
from amalgam.distill.methods import MethodOptions
from amalgam.distill.methods.base import Method
from amalgam.errors import UserError
from amalgam.models.model_input import ModelInput
from amalgam.tasks.images import ImageSet
from tests.helpers.small_models import TinyStudent, roster3


def test_the_default_is_the_seeds_adam_with_decay_on_every_parameter():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    config = TrainConfig()
    optimizer = make_optimizer(model.parameters(), config.opt, config.lr, config.weight_decay)
    assert type(optimizer) is torch.optim.Adam
    (group,) = optimizer.param_groups  # no bias/norm group without decay: as before timm
    assert group["lr"] == pytest.approx(1e-3) and group["weight_decay"] == pytest.approx(5e-4)
    assert len(group["params"]) == len(list(model.parameters()))


def test_timm_optimiser_names_and_a_misspelt_one():
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert type(make_optimizer(params, "adamw", 1e-3, 0.05)) is torch.optim.AdamW
    assert type(make_optimizer(params, "sgd", 1e-2, 0.0)).__name__ == "SGD"
    assert type(make_optimizer(params, "lamb", 1e-3, 0.0)).__name__ == "Lamb"  # timm's own
    with pytest.raises(UserError, match=r"--opt 'adamx' .*adam"):
        TrainConfig(opt="adamx")


class WithHelper(Method):
    """A method with a trainable helper of its own, as FitNet's regressors."""

    name = "with-helper"
    uses_teachers = False

    def __init__(self, roster, options):
        super().__init__(roster, options)
        self.helper = torch.nn.Linear(5, 5)

    def loss_terms(self, student_logits, student_features, teacher, labels):
        return {"loss_ce": F.cross_entropy(self.helper(student_logits), labels)}


@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_the_methods_helpers_are_optimised_with_the_student(opt: str):
    _, roster = roster3()
    torch.manual_seed(0)
    images = ImageSet(torch.randint(0, 255, (8, 3, 16, 16), dtype=torch.uint8), torch.arange(8) % 5)
    trainer = Trainer(
        TinyStudent(5), WithHelper(roster, MethodOptions()), ModelInput(16, (0.5,) * 3, (0.25,) * 3),
        images, images, 5, TrainConfig(epochs=1, batch_size=4, quiet=True, opt=opt, lr=0.1),
    )
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in trainer.method.parameters()} <= optimised
    assert {id(p) for p in trainer.student.parameters()} <= optimised
    before = trainer.method.helper.weight.detach().clone()
    trainer.train_epoch()
    assert not torch.equal(before, trainer.method.helper.weight)


def lrs(config: TrainConfig, epochs: int | None = None) -> list[float]:
    """The learning rate of each epoch, as the trainer sees it (stepped once per epoch)."""
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    schedule = make_scheduler(optimizer, config)
    seen = []
    for _ in range(epochs or config.epochs):
        seen.append(optimizer.param_groups[0]["lr"])
        schedule.step()
    return seen


def test_warmup_rises_linearly_then_the_cosine_decays():
    seen = lrs(TrainConfig(epochs=6, lr=1e-3, scheduler="cosine", warmup_epochs=2))
    assert seen[0] == pytest.approx(1e-5)  # timm's warm-up start
    assert seen[1] == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2)
    assert seen[2] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 2 / 6)))  # timm: t counts warm-up
    assert all(a > b for a, b in zip(seen[2:], seen[3:], strict=False))


@pytest.mark.parametrize("sched", ["tanh", "poly", "constant", "none"])
def test_other_timm_schedules_start_at_lr(sched: str):
    seen = lrs(TrainConfig(epochs=4, lr=1e-3, scheduler=sched))
    assert seen[0] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(seen, seen[1:], strict=False))


def test_a_schedule_resumes_at_its_epoch_and_follows_a_longer_run():
    config = TrainConfig(epochs=4, lr=1e-3, scheduler="cosine")
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    schedule = make_scheduler(optimizer, config)
    for _ in range(3):
        schedule.step()
    state = schedule.state_dict()
    assert all(isinstance(v, int) for v in state.values())  # last_state.pt is read with weights_only

    longer = TrainConfig(epochs=8, lr=1e-3, scheduler="cosine")  # resumed with --epochs 8
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=longer.lr)
    resumed = make_scheduler(optimizer, longer)
    resumed.load_state_dict(state)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 3 / 8)))
    resumed.load_state_dict({"last_epoch": 2, "base_lrs": [1e-3]})  # a torch scheduler's, from older runs
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 2 / 8)))


def test_impossible_schedules_are_refused():
    with pytest.raises(UserError, match="--scheduler must be one of"):
        TrainConfig(scheduler="plateau")  # needs a metric the per-epoch step does not pass
    with pytest.raises(UserError, match="--warmup-epochs must be >= 0"):
        TrainConfig(warmup_epochs=-1)
