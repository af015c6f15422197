"""Stopping and continuing a run: Ctrl-C saves the trainer state, --resume reads it back checked.

last_state.pt holds the optimiser, scheduler, epoch and RNG as tensors only, and is read back
with weights_only=True, so a damaged or foreign file is refused with a one-line reason.
"""

from __future__ import annotations

import contextlib
import pickle
import signal
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from amalgam.distill.engine.trainer import Trainer
from amalgam.distill.runs.folders import STATE_FILE
from amalgam.errors import UserError
from amalgam.models.checkpoint import atomic_write_bytes, torch_save_writer


@dataclass(frozen=True)
class SavedRun:
    """A stopped run to continue: its folder and its checked trainer state."""

    run_dir: Path
    state: dict


class TrainingInterrupted(UserError):
    """Ctrl-C: the state was saved; the message says how to resume."""

    exit_code = 130


def cannot_resume(run_dir: Path) -> str:
    """What to do instead of resuming: where the last finished epoch's weights are."""
    last = run_dir / "last.safetensors"
    kept = f"the last finished epoch's weights are in {last}" if last.exists() else "no epoch finished"
    return f"this run cannot be resumed ({kept}); start a new run"


def load_state(run_dir: Path) -> dict:
    """The saved trainer state, read as tensors only: a damaged or foreign file is refused."""
    path = run_dir / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        what = "holds objects other than tensors (code?)" if "Weights only" in str(exc) else "is damaged"
        raise UserError(f"{path} {what} and was not loaded; {cannot_resume(run_dir)}") from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UserError(
            f"{path} is damaged (truncated or not a torch file) and was not loaded; {cannot_resume(run_dir)}"
        ) from exc
    if not isinstance(state, dict) or not {"student", "optimizer", "epoch"} <= state.keys():
        raise UserError(f"{path} is not a trainer state and was not loaded; {cannot_resume(run_dir)}")
    return state


def restore_state(trainer: Trainer, state: dict, run_dir: Path) -> None:
    try:
        trainer.load_state_dict(state)
    except (KeyError, RuntimeError, TypeError, ValueError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(
            f"{run_dir / STATE_FILE} does not fit this run's student, method or optimiser ({first}); "
            f"{cannot_resume(run_dir)}"
        ) from exc


def save_state(trainer: Trainer, run_dir: Path) -> None:
    state = trainer.state_dict()
    atomic_write_bytes(run_dir / STATE_FILE, torch_save_writer(state))


@contextlib.contextmanager
def stop_on_interrupt(checkpoint_every: int, run_dir: Path, writes: bool = True):
    """Turn Ctrl-C into a clean stop after the current step, with the state saved first."""
    requested = threading.Event()

    def after_step(trainer: Trainer) -> None:
        step = trainer.progress["step"]
        if writes and (requested.is_set() or (checkpoint_every and step % checkpoint_every == 0)):
            save_state(trainer, run_dir)
        if requested.is_set():
            raise TrainingInterrupted(
                f"interrupted at epoch {trainer.epoch + 1} step {step}; state saved in "
                f"{run_dir / STATE_FILE}; resume with: python train.py --resume {run_dir}"
            )

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda *_: requested.set()) if in_main else None
    try:
        yield after_step
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)
