"""Run folders: plain run names, and folders claimed exclusively so that no run replaces another's.

A run owns its folder once it has created `config.json` with O_EXCL; everything before that
only checks, so two runs started at once (or a user's own folder passed as --out) can never
end with one run's files silently replacing another's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from amalgam.errors import UserError
from amalgam.models.checkpoint import atomic_write_bytes

STATE_FILE = "last_state.pt"


def write_json(path: Path, data) -> None:
    """A JSON file in the run folder, replaced whole or not at all."""
    text = json.dumps(data, indent=2)
    atomic_write_bytes(path, lambda p: p.write_text(text))


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


def check_run_name(name: str) -> str:
    """A run name is one plain folder-name part: it can never point outside runs/."""
    if name and RUN_NAME.fullmatch(name) and ".." not in name:
        return name
    raise UserError(
        f"--run {name!r} is not a plain name; use letters, digits, '.', '_', '+' and '-' "
        "(no '/', '..' or spaces; it becomes part of runs/<time>_task_<T>_<run>)"
    )


def default_run_dir(runs_root: Path, task_dir_name: str, run_name: str) -> Path:
    """runs/<YYYYmmdd-HHMMSS>_task_<T>[_<run>]; `fresh_dir` adds -2, -3… if it is taken."""
    suffix = f"_{check_run_name(run_name)}" if run_name else ""
    return runs_root / f"{time.strftime('%Y%m%d-%H%M%S')}_task_{task_dir_name}{suffix}"


def fresh_dir(base: Path) -> Path:
    """Create `base`, or base-2, base-3…, exclusively: two runs started at once never share one."""
    make_parent(base)
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")


def make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise UserError(f"cannot create {path}: {exc.filename} is a file, not a folder") from exc


@dataclass(frozen=True)
class RunDirClaim:
    """A run folder this process owns; `created` says whether it made the folder itself."""

    path: Path
    created: bool


def check_out_dir(out_dir: Path) -> None:
    """Refuse, before any work, an --out that is a file, a run, or someone else's folder."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a folder; pass a new or empty folder")
    names = {p.name for p in out_dir.iterdir()} if out_dir.is_dir() else set()
    if names & {"config.json", STATE_FILE}:
        raise UserError(f"{out_dir} already holds a run; pass another --out, or --resume {out_dir}")
    if names:
        raise UserError(
            f"--out {out_dir} is not empty and holds no amalgam run; pass a new or empty folder "
            "(nothing in it is replaced)"
        )


def claim_config_file(run_dir: Path) -> None:
    """Create config.json exclusively: of two runs claiming one folder, exactly one wins."""
    try:
        os.close(os.open(run_dir / "config.json", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError as exc:
        raise UserError(
            f"{run_dir} already holds a run (another run may have just claimed it); "
            f"pass another --out, or --resume {run_dir}"
        ) from exc
    except OSError as exc:
        raise UserError(f"cannot write a run into {run_dir} ({exc.strerror}); pass another --out") from exc


def claim_run_dir(out_dir: Path | None, default: Path) -> RunDirClaim:
    """Own a run folder: a new default one, a new --out, or an existing empty --out."""
    if out_dir is None:
        claim = RunDirClaim(fresh_dir(default), created=True)
    else:
        check_out_dir(out_dir)
        make_parent(out_dir)
        try:
            out_dir.mkdir()
            claim = RunDirClaim(out_dir, created=True)
        except FileExistsError:
            claim = RunDirClaim(out_dir, created=False)  # empty (checked); config.json decides
    claim_config_file(claim.path)
    return claim


def check_new_run(run_name: str, out_dir: Path | None) -> None:
    """What `claim_run_dir` would refuse, refused before start-up spends any time."""
    if run_name:
        check_run_name(run_name)
    if out_dir is not None:
        check_out_dir(out_dir)


# What a run writes into its folder before its first state (runs/saving.py, runs/metric_log.py);
# the folder was empty when claimed, so these are ours to remove
UNSTARTED_FILES = {
    "config.json", "best.safetensors", "best.json", "best_method.safetensors", "last.safetensors",
    "last.json", "history.json", "learning_curve.png",
}


def release_unstarted(claim: RunDirClaim) -> None:
    """Remove a claimed folder whose run failed before saving any state (a full disk can fail
    the first epoch's save after best.* and last.* but before last_state.pt), so it blocks
    nothing and no half run is left to resume; a run with a saved state is kept, resumable."""
    with contextlib.suppress(OSError):  # called while another error propagates: never mask it
        names = {p.name for p in claim.path.iterdir()}
        if STATE_FILE in names:
            return  # resumable: keep everything
        ours = {n for n in names if n in UNSTARTED_FILES or n.startswith("events.out.tfevents.")
                or (n.startswith(".") and n.endswith(".tmp"))}
        for name in ours:
            (claim.path / name).unlink(missing_ok=True)
        if claim.created and not names - ours:
            claim.path.rmdir()
