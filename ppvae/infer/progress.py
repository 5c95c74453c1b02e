"""Progress where a person watches, a few plain lines where output is captured.

On a terminal, long work shows a tqdm bar. Where stderr is a file or a pipe (a log, CI, a notebook's
stored output) a bar's every refresh would be written out as one more frame, so the same calls
print a plain line at a few milestones instead, or nothing (``lines=0``: the training loop, whose
epoch lines already say how it goes). ``enabled=False`` (``--quiet``) shows nothing anywhere.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm import tqdm

PLAIN_LINES = 4  # milestones of a bar written where no terminal shows it: 25%, 50%, 75%, done


class PlainProgress:
    """tqdm's ``update`` / ``set_postfix`` / ``n`` / ``close`` for captured output: a line at each milestone."""

    def __init__(self, total: int, desc: str, unit: str, lines: int = PLAIN_LINES, file: Any = None):
        self.total, self.desc, self.unit, self.lines = total, desc, unit, lines
        self.file = file
        self.n = 0
        self._written = 0  # milestones written so far
        self._started = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n
        due = self.lines * min(self.n, self.total) // max(self.total, 1)
        if due > self._written:
            self._written = due
            seconds = time.perf_counter() - self._started
            print(
                f"{self.desc}: {self.n}/{self.total} {self.unit}s ({self.n / max(self.total, 1):.0%}, {seconds:.0f} s)",
                file=self.file or sys.stderr,
                flush=True,
            )

    def set_postfix(self, **_: Any) -> None:
        """The bar's running figures; the lines leave them out (the loop reports its own at each epoch)."""

    def close(self) -> None:
        pass

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def on_terminal(stream: Any = None) -> bool:
    """Whether ``stream`` (stderr by default) is a terminal a bar can redraw on."""
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def progress_bar(
    total: int, desc: str, unit: str, enabled: bool = True, lines: int = PLAIN_LINES, **options: Any
) -> tqdm | PlainProgress:
    """A tqdm bar on a terminal; elsewhere `PlainProgress` with ``lines`` milestones; nothing when not
    ``enabled``. ``options`` go to tqdm."""
    if enabled and on_terminal():
        return tqdm(total=total, desc=desc, unit=unit, leave=False, **options)
    return PlainProgress(total, desc, unit, lines if enabled else 0)
