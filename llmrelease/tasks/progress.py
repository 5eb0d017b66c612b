"""A rich progress bar for long steps, drawn on stderr so --json output on stdout stays clean."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["progress_bar"]


@contextmanager
def progress_bar(
    description: str, total: int, *, preparing: str | None = None
) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(n)``. With ``preparing``, an indeterminate bar with that text shows first
    (e.g. while the engine starts); the first ``advance`` call, even ``advance(0)``, turns it into the
    real bar. Without it, the bar appears at the first ``advance`` call."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    task_id = None
    preparing_now = False

    def advance(n: int = 1) -> None:
        nonlocal task_id, preparing_now
        if task_id is None:
            progress.start()
            task_id = progress.add_task(description, total=total)
        elif preparing_now:
            progress.reset(task_id, total=total, description=description)
            preparing_now = False
        progress.update(task_id, advance=n)

    if preparing:
        progress.start()
        task_id = progress.add_task(preparing, total=None)
        preparing_now = True
    try:
        yield advance
    finally:
        if task_id is not None:
            progress.stop()
