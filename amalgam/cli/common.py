"""What both front ends share: device choice and turning user mistakes into one line."""

from __future__ import annotations

import sys

import torch
import typer

from amalgam.errors import UserError
from amalgam.writable import describe_write_failure


def _click_class(name: str) -> type[Exception]:
    """Typer >= 0.29 vendors its own copy of click, older ones use click itself."""
    return next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == name)


# the base classes of the errors Click raises while parsing and running a command
CLICK_USAGE_ERROR = _click_class("UsageError")
CLICK_EXCEPTION = _click_class("ClickException")


def run_cli(app: typer.Typer) -> None:
    """Run a Typer app so that every way it can fail ends in one `error:` line.

    Click's own usage errors (unknown option, bad value) would otherwise print a
    multi-line box; a UserError carries its exit code (2, or 130 for an interruption).
    An OSError that says a place cannot be written (read-only, full, not ours) is a user's to fix
    too: one line naming the path.
    """
    try:
        outcome = app(standalone_mode=False)
    except CLICK_USAGE_ERROR as exc:
        where = f"; see '{exc.ctx.command_path} --help'" if exc.ctx is not None else ""
        _fail(f"{one_line(exc.format_message()).rstrip('.')}{where}", exc.exit_code)
    except typer.Abort:
        _fail("interrupted", 130, prefix="")
    except CLICK_EXCEPTION as exc:
        _fail(one_line(exc.format_message()), exc.exit_code)
    except UserError as exc:
        _fail(str(exc), getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        _fail("interrupted", 130, prefix="")
    except OSError as exc:  # a read-only home, a full disk: the place is wrong, not the program
        message = describe_write_failure(exc)
        if message is None:
            raise
        _fail(message, 2)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if isinstance(outcome, int) and outcome != 0:  # click returns the code of ctx.exit(n)
        sys.exit(outcome)


def one_line(message: str) -> str:
    """Fold a message onto one line, so that every error reads as a single `error:` line."""
    return "; ".join(part.strip() for part in message.splitlines() if part.strip())


def _fail(message: str, exit_code: int, prefix: str = "error: ") -> None:
    print(f"{prefix}{one_line(message)}", file=sys.stderr)
    sys.exit(exit_code)
