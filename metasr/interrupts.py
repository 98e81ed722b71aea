"""Interrupts (SIGINT, SIGTERM) as exceptions, and telling an interrupt from the error it turned into.

:func:`handle_signals` makes SIGTERM raise :class:`Terminated` (a ``KeyboardInterrupt``, so every ``finally``
and context manager cleans up as for Ctrl-C) and records each signal received. An interrupt does not always
arrive as a ``KeyboardInterrupt``: one that lands while a C extension initialises is turned into an
``ImportError`` by pybind11 (``initialization failed``, the interrupt as its ``__cause__``), which a caller
probing for an optional package takes for a missing package. So code that catches ``ImportError`` calls
:func:`reraise_interrupt` first, and the command line reports any run during which a signal arrived as an
interrupt (exit 130 / 143), whatever exception ended it.

Standard library only.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Terminated", "handle_signals", "reraise_interrupt"]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every ``finally`` (temporary files, directories) runs."""


def reraise_interrupt(error: BaseException) -> None:
    """Raise the ``KeyboardInterrupt`` that ``error`` came from (its ``__cause__`` / ``__context__`` chain),
    if any; return otherwise."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            raise e
        seen.add(id(e))
        e = e.__cause__ or e.__context__


@contextmanager
def handle_signals() -> Iterator[list[int]]:
    """While active (main thread only: elsewhere it changes nothing): SIGINT raises ``KeyboardInterrupt`` and
    SIGTERM :class:`Terminated`; yields the list of signals received, in order. A signal the process was told
    to ignore (SIGINT of a background job) stays ignored."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def on_signal(signum: int, frame: object) -> None:
        received.append(signum)
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    signals = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not signal.SIG_IGN]
    previous = {s: signal.signal(s, on_signal) for s in signals}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
