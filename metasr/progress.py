"""Progress of long loops: one line redrawn in place on a terminal, nothing in a pipe or a CI log.

    for crop in Progress(crops, "ranges", unit="crop"):
        ...

On a terminal (the stream, stderr by default, is a TTY) a line ``ranges  37/128 crop  00:04 < 00:10`` is redrawn
with ``\\r`` at most every :data:`REDRAW_S` seconds and erased when the loop ends (or breaks, or raises).
Anywhere else it writes nothing: a redrawing bar turns a log into thousands of fragments (tqdm wrote 14
redraws for a 3-image batch into a pipe), so callers print their own plain line per item where one is useful
(``metasr upscale``: each output's name; ``metasr train``: each log record). :meth:`Progress.write` prints such
a line without tearing the bar; :meth:`Progress.set_postfix` adds ``key=value`` fields to it.

Standard library only (it replaced the tqdm dependency).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Generic, TextIO, TypeVar

__all__ = ["REDRAW_S", "Progress", "on_terminal"]

T = TypeVar("T")
REDRAW_S = 0.1


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: stderr) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress(Generic[T]):
    """Iterate ``items`` showing progress on a terminal (see the module docstring).

    ``total``: the item count when ``items`` has no ``len``; ``initial``: items done before (a resumed run);
    ``enabled=False`` draws nothing anywhere; ``stream``: where to draw (default stderr).
    """

    def __init__(
        self,
        items: Iterable[T],
        desc: str = "",
        *,
        unit: str = "it",
        total: int | None = None,
        initial: int = 0,
        enabled: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.items = items
        self.desc, self.unit = desc, unit
        self.total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)  # type: ignore[arg-type]
        self.done = self.initial = initial
        self.stream = sys.stderr if stream is None else stream
        self.active = enabled and on_terminal(self.stream)
        self.postfix = ""
        self._start = self._last = 0.0
        self._width = 0

    def __iter__(self) -> Iterator[T]:
        self._start = time.monotonic()
        try:
            for item in self.items:
                yield item
                self.done += 1
                if self.active and time.monotonic() - self._last >= REDRAW_S:
                    self._draw()
        finally:
            self._erase()

    def set_postfix(self, **fields: object) -> None:
        """Show ``key=value`` fields after the counts (e.g. a training loss)."""
        self.postfix = "  " + " ".join(f"{k}={v}" for k, v in fields.items())

    def write(self, line: str, file: TextIO | None = None) -> None:
        """Print ``line`` (to stdout by default) without tearing the bar; it is redrawn on the next item."""
        self._erase()
        print(line, file=file or sys.stdout, flush=True)

    def line(self) -> str:
        """The progress line as drawn now."""
        elapsed = time.monotonic() - self._start
        count = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
        timing = _clock(elapsed)
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        if self.total is not None and rate > 0:
            timing += f" < {_clock((self.total - self.done) / rate)}"
        return f"{self.desc}  {count} {self.unit}  {timing}{self.postfix}".strip()

    def _draw(self) -> None:
        text = self.line()
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width, self._last = len(text), time.monotonic()

    def _erase(self) -> None:
        if self.active and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
