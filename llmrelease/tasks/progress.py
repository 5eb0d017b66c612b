"""A rich progress bar for long steps, drawn on stderr so --json output on stdout stays clean."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["progress_bar"]


@contextmanager
def progress_bar(description: str, total: int, *, lazy: bool = False) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(n)``. With ``lazy`` the bar appears only once something advances."""
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    task_id = None
    started = False

    def advance(n: int = 1) -> None:
        nonlocal task_id, started
        if not started:
            progress.start()
            task_id = progress.add_task(description, total=total)
            started = True
        progress.update(task_id, advance=n)

    if not lazy:
        advance(0)
    try:
        yield advance
    finally:
        if started:
            progress.stop()
