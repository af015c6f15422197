"""Console entry points (`amalgam-train`, `amalgam-evaluate`) and the checkout's scripts.

Importing the command modules pulls in torch and timm, which takes seconds; a Ctrl-C in
that window must end like any other interruption (one line, exit 130), not with a
traceback from deep inside an import.
"""

from __future__ import annotations

import importlib
import sys


def launch(module: str) -> None:
    """Import `module` and run its `main`, turning an early Ctrl-C into exit code 130."""
    try:
        main = importlib.import_module(module).main
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    main()


def train() -> None:
    launch("amalgam.cli.train_cli")


def evaluate() -> None:
    launch("amalgam.cli.eval_cli")
