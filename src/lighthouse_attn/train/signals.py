"""SIGINT/SIGTERM turn into a stop request that the loop honours at the next step boundary
(after writing a checkpoint); a second SIGINT interrupts at once."""

from __future__ import annotations

import signal
import threading

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}
"""Exit codes of a run stopped by a signal (128 + the signal's number)."""


class StopRequest:
    """Context manager: while active, SIGINT and SIGTERM set :attr:`signal_name` instead of
    killing the process (only in the main thread; elsewhere it is inert)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
