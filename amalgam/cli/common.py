"""What both front ends share: device choice and turning user mistakes into one line."""

from __future__ import annotations

import sys

import torch
import typer

from amalgam.errors import UserError


def resolve_device(name: str) -> str:
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


def run_cli(app: typer.Typer) -> None:
    """Run a Typer app; a UserError becomes `error: …` on stderr and exit code 2."""
    try:
        app()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
