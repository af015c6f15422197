"""Console output at the edges: one console, progress bars that `--quiet` turns off."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

console = Console(soft_wrap=True)
T = TypeVar("T")


def track(items: Iterable[T], total: int, description: str, quiet: bool) -> Iterator[T]:
    """Iterate with a transient rich progress bar unless quiet."""
    if quiet or not console.is_terminal:  # bars in a log file are noise
        yield from items
        return
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=total, status="")
        for item in items:
            yield item
            progress.advance(task)


def say(message: str, quiet: bool = False) -> None:
    if not quiet:
        console.print(message)
