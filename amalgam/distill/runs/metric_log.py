"""Each epoch's metrics to an experiment tracker: `--log tensorboard` (the optional extra).

The trainer's history row is the one source: every number in it (losses and each loss term,
accuracies, macro-F1, learning rate, seconds) becomes a scalar tagged `<quantity>/<split>`
(`loss/train`, `loss/val`, `acc/val`), so TensorBoard draws train and val of one quantity side
by side. Event files go into the run folder itself, so `tensorboard --logdir runs` lists every
run by its folder name; the writer opens at the first finished epoch, so a run that stops
before saving any state still leaves only what `folders.release_unstarted` removes.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path

from amalgam.errors import UserError

METRIC_LOGS = ("none", "tensorboard")
INSTALL_TENSORBOARD = "pip install 'amalgam[tensorboard]'"
SPLITS = ("train", "val")

EpochHook = Callable[[dict], None]


def check_metric_log(name: str) -> None:
    """Refuse, before any work, a log that is unknown or whose package is not installed."""
    if name not in METRIC_LOGS:
        raise UserError(f"--log must be one of: {', '.join(METRIC_LOGS)}; got {name!r}")
    if name == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise UserError(f"--log tensorboard needs the TensorBoard extra, which is not installed: "
                        f"{INSTALL_TENSORBOARD}")


def scalar_tags(row: dict, prefix: str = "") -> dict[str, float]:
    """Every number of a history row under its tag: train_loss → loss/train, val_macro_f1 →
    macro_f1/val, lr → lr; a nested table (e.g. loss terms) adds its keys under its own tag."""
    tags: dict[str, float] = {}
    for key, value in row.items():
        if key == "epoch" and not prefix:
            continue  # the step, not a metric
        split, _, quantity = str(key).partition("_")
        tag = f"{quantity}/{split}" if split in SPLITS and quantity else str(key)
        tag = f"{prefix}{tag}"
        if isinstance(value, dict):
            tags.update(scalar_tags(value, f"{tag}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            tags[tag] = float(value)
    return tags


class TensorBoardLog:
    """Writes one history row per call, at step = its epoch."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.writer = None

    def __call__(self, row: dict) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.run_dir))
        for tag, value in scalar_tags(row).items():
            self.writer.add_scalar(tag, value, global_step=int(row["epoch"]))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@contextlib.contextmanager
def metric_log(name: str, run_dir: Path, writes: bool = True) -> Iterator[EpochHook | None]:
    """The per-epoch hook for `--log name` (None for `none`, or on a process that does not write)."""
    if name == "none" or not writes:
        yield None
        return
    log = TensorBoardLog(run_dir)
    try:
        yield log
    finally:
        log.close()
