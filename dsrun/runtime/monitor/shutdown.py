"""Closing the monitor exactly once: at normal interpreter exit, or when SIGTERM/SIGINT arrives.

dsrun's launcher stops workers with SIGTERM (then SIGKILL after --shutdown-timeout), and Python's default action
for SIGTERM kills the process without running atexit, so without a handler a torn-down run would leave no summary.
The handler closes, then lets the signal take its course: it calls the handler that was there before (Python's
KeyboardInterrupt for SIGINT, or the script's own), or, where that was the default action, restores it and sends
the signal again, so the process still dies of the signal and its parent sees the same exit status.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
from typing import Any, Callable

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class CloseOnExit:
    def __init__(self, close: Callable[[str], None]):
        self._close = close  # takes what ended the run: "exit" or a signal name
        self._previous: dict[int, Any] = {}  # what signal.signal returned: a handler, SIG_DFL/SIG_IGN or None
        self._busy = 0
        self._pending: int | None = None

    def install(self) -> None:
        atexit.register(self._at_exit)
        if threading.current_thread() is not threading.main_thread():
            return  # Python only lets the main thread set handlers; atexit still covers a normal exit
        for signum in SIGNALS:
            previous = signal.getsignal(signum)
            # Leave alone a signal the process ignores (it is not meant to end the run) and one whose handler was
            # set outside Python (we could not hand the signal back to it).
            if previous is signal.SIG_IGN or previous is None:
                continue
            self._previous[signum] = previous
            signal.signal(signum, self._on_signal)

    def uninstall(self) -> None:
        """Stop listening (after the monitor closed by itself), handing each signal back if still ours."""
        atexit.unregister(self._at_exit)
        for signum, previous in self._previous.items():
            with contextlib.suppress(ValueError):  # not the main thread: leave the handler, it only chains now
                if signal.getsignal(signum) == self._on_signal:
                    signal.signal(signum, previous)

    @contextlib.contextmanager
    def deferring_signals(self):
        """A signal that arrives inside the block is acted on when it ends, so closing never cuts a row in half."""
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1
            pending, self._pending = self._pending, None
            if pending is not None and not self._busy:
                self._handle(pending, None)

    def _at_exit(self) -> None:
        self._close("exit")

    def _on_signal(self, signum: int, frame) -> None:
        if self._busy:
            self._pending = signum
            return
        self._handle(signum, frame)

    def _handle(self, signum: int, frame) -> None:
        previous = self._previous.get(signum, signal.SIG_DFL)
        try:
            self._close(signal.Signals(signum).name)
        finally:
            if callable(previous):
                previous(signum, frame)
            else:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
