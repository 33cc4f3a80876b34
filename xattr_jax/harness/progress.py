"""Progress on stderr (rich): items done, elapsed time and an ETA from the measured throughput.

* :func:`progress` — a rich ``Progress`` display with those columns (several tasks; the demo).
* :func:`progress_bar` — one bar of ``total`` items as a context manager (jobs, ``xattr explain``);
  Ctrl-C inside it raises :class:`Interrupted`, which says how far it got.

The ETA is measured, not guessed: the first item (which includes compilation) only starts the
clock; after that, time left = items left ÷ the items per second since the first one.
"""

from __future__ import annotations

import contextlib
import datetime
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

__all__ = ["progress", "progress_bar", "Interrupted", "EtaColumn"]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a :func:`progress_bar`: ``done`` of ``total`` ``unit`` were finished."""

    def __init__(self, done: int, total: int, unit: str, resumable: bool):
        super().__init__(f"interrupted after {done} of {total} {unit}")
        self.done, self.total, self.unit, self.resumable = done, total, unit, resumable


class EtaColumn(ProgressColumn):
    """``ETA h:mm:ss`` from the throughput measured after the first item (``measuring`` before)."""

    def __init__(self):
        super().__init__()
        self._start: dict = {}  # task id -> (elapsed, completed) when the first item was done

    def render(self, task) -> Text:
        if task.total is None or task.finished or task.elapsed is None:
            return Text("")
        if task.completed > 0:
            self._start.setdefault(task.id, (task.elapsed, task.completed))
        t0, d0 = self._start.get(task.id, (None, None))
        if t0 is None or task.completed <= d0 or task.elapsed <= t0:
            return Text("ETA measuring", style="progress.remaining")
        left = (task.total - task.completed) * (task.elapsed - t0) / (task.completed - d0)
        return Text(f"ETA {datetime.timedelta(seconds=round(left))}", style="progress.remaining")


def progress(enabled: bool = True, width: int = 44, get_time=None):
    """A rich progress display on stderr: description, bar, done/total, elapsed, ETA.

    Drawn only when stderr is a terminal (a log file gets the commands' result lines instead).
    """
    console = Console(stderr=True)
    return Progress(
        TextColumn(f"{{task.description:<{width}}}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        EtaColumn(), console=console, disable=not (enabled and console.is_terminal), get_time=get_time,
    )  # fmt: skip


class _Bar:
    def __init__(self, display, task, total: int):
        self._display, self._task = display, task
        self.done, self.total = 0, total

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._display is not None:
            self._display.advance(self._task, n)

    def describe(self, text: str) -> None:
        if self._display is not None:
            self._display.update(self._task, description=text)


@contextlib.contextmanager
def progress_bar(total: int, description: str, enabled: bool = True, *, unit: str = "items",
                 resumable: bool = False) -> Iterator[_Bar]:  # fmt: skip
    """A bar of ``total`` ``unit`` on stderr (a counter only when ``enabled`` is false).

    Raises:
      Interrupted: Ctrl-C inside the block, with how many were done (``resumable``: whether
        running the same command again continues from there).
    """
    display = progress(enabled, width=max(24, len(description)))
    bar = _Bar(None, None, total)
    try:
        if display.disable:
            yield bar
            return
        with display as p:
            bar._display, bar._task = p, p.add_task(description, total=max(total, 0))
            yield bar
    except KeyboardInterrupt as err:
        if isinstance(err, Interrupted):
            raise
        raise Interrupted(bar.done, total, unit, resumable) from None
