"""Which torch device a `--device` / `device=` value names, checked once for both front ends."""

from __future__ import annotations

import torch

from amalgam.errors import UserError


def resolve_device(name: str) -> str:
    """`auto` is CUDA where there is one, else the CPU; anything else must be a device this machine has,
    so a typo fails before any data or teacher is loaded."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for CUDA but none is available; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name} is not supported; use auto, cpu, cuda or cuda:N")
    return str(device)
