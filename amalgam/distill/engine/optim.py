"""The optimiser and learning-rate schedule, built by timm's factories from timm's names.

`--opt` is any name `timm.optim.create_optimizer_v2` knows (adam, adamw, sgd, lamb, …) and
`--sched` one of timm's epoch schedules (`timm.scheduler.create_scheduler_v2`), with
`--warmup-epochs` of linear warm-up. The defaults are the reference app's: Adam with L2 weight decay on
every parameter (the parameters are passed as a list, so timm's no-decay-on-bias/norm grouping
does not silently change them) and a cosine decay to zero over the run; `--sched step` is the
reference app's StepLR (`--scheduler-step`, `--scheduler-gamma`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Protocol

import torch
from timm.optim import create_optimizer_v2, list_optimizers
from timm.scheduler import create_scheduler_v2

DEFAULT_OPT = "adam"
# epoch schedules that need no validation metric (timm's plateau does, and is deprecated there)
SCHEDULERS = ("cosine", "step", "tanh", "poly", "constant", "none")


class ScheduleSettings(Protocol):
    """The fields of TrainConfig a schedule reads (a Protocol: trainer.py imports this module)."""

    scheduler: str
    epochs: int
    scheduler_step: int
    scheduler_gamma: float
    warmup_epochs: int


def check_opt(name: str) -> str | None:
    """None when timm knows the optimiser `name`, else a one-line message with close names."""
    known = list_optimizers()
    if name.lower() in known:
        return None
    close = difflib.get_close_matches(name.lower(), known, n=4)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return f"--opt {name!r} is not an optimiser timm knows; {hint}e.g. adam, adamw, sgd, lamb, lion"


def make_optimizer(
    params: Iterable[torch.nn.Parameter], opt: str, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """All of `params` in one group: the student's and the method's trainable helpers alike."""
    return create_optimizer_v2(list(params), opt=opt, lr=lr, weight_decay=weight_decay)


class EpochSchedule:
    """A timm schedule stepped once per finished epoch, with the torch-style `step()` the
    trainer calls. timm schedules are functions of the epoch, so the state is the epoch alone:
    a resumed run recomputes its learning rate (and the cosine's length, when given more epochs)."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: ScheduleSettings) -> None:
        self.epoch = 0
        self.schedule, _ = create_scheduler_v2(
            optimizer,
            sched=config.scheduler,
            num_epochs=config.epochs,
            decay_epochs=config.scheduler_step,
            decay_rate=config.scheduler_gamma if config.scheduler == "step" else 0.1,
            warmup_epochs=config.warmup_epochs,
            min_lr=0.0,
        )

    def step(self) -> None:
        self.epoch += 1
        if self.schedule is not None:
            self.schedule.step(self.epoch)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        """Our own state, or a torch LambdaLR/StepLR state from a run saved before timm's
        schedules (its `last_epoch` is the same count)."""
        self.epoch = int(state.get("epoch", state.get("last_epoch", 0)))
        if self.schedule is not None and self.epoch:
            self.schedule.step(self.epoch)


def make_scheduler(optimizer: torch.optim.Optimizer, config: ScheduleSettings) -> EpochSchedule:
    return EpochSchedule(optimizer, config)
