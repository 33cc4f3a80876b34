"""Progress on stderr (rich): items done, elapsed time and ETA; compilation counts in the first item.

* :func:`progress` — a rich ``Progress`` display with those columns (several tasks; the demo).
* :func:`progress_bar` — one bar of ``total`` items as a context manager (jobs, ``xattr explain``).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

__all__ = ["progress", "progress_bar"]


def progress(enabled: bool = True, width: int = 44):
    """A rich progress display on stderr: description, bar, done/total, elapsed, ETA.

    Drawn only when stderr is a terminal (a log file gets the commands' result lines instead).
    """
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)  # fmt: skip

    console = Console(stderr=True)
    return Progress(
        TextColumn(f"{{task.description:<{width}}}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(), console=console, disable=not (enabled and console.is_terminal),
    )  # fmt: skip


class _Bar:
    def __init__(self, display, task):
        self._display, self._task = display, task

    def advance(self, n: int = 1) -> None:
        if self._display is not None:
            self._display.advance(self._task, n)

    def describe(self, text: str) -> None:
        if self._display is not None:
            self._display.update(self._task, description=text)


@contextlib.contextmanager
def progress_bar(total: int, description: str, enabled: bool = True) -> Iterator[_Bar]:
    """A bar of ``total`` items on stderr; a no-op when ``enabled`` is false."""
    display = progress(enabled, width=max(24, len(description)))
    if display.disable:
        yield _Bar(None, None)
        return
    with display as p:
        yield _Bar(p, p.add_task(description, total=max(total, 0)))
