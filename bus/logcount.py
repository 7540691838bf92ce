"""Warnings and errors a process logged in the last hour, for its heartbeat.

One ``LogCounter`` per process sits on the root logger and keeps the time and
level of each WARNING-or-worse record of the last hour (at most ``MAX_KEPT``),
and the last error's text. The heartbeat carries the summary under
``info["log"]`` so the supervisor, ``trader ps`` and the dashboard show each
process's and each agent's warning and error counts without reading its log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

WINDOW_S = 3600.0
MAX_KEPT = 10_000
TEXT_LIMIT = 300


class LogCounter(logging.Handler):
    """Counts WARNING and ERROR (and worse) records over a sliding hour; remembers the last error."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self._records: deque[tuple[float, bool]] = deque(maxlen=MAX_KEPT)  # (monotonic time, is an error)
        self._lock_counts = threading.Lock()
        self.last_error = ""
        self.last_error_ns = 0

    def emit(self, record: logging.LogRecord) -> None:
        error = record.levelno >= logging.ERROR
        with self._lock_counts:
            self._records.append((time.monotonic(), error))
            if error:
                try:
                    text = record.getMessage()
                except (TypeError, ValueError, KeyError):  # a bad format string must not break logging
                    text = str(record.msg)
                self.last_error = f"{record.name}: {text}"[:TEXT_LIMIT]
                self.last_error_ns = time.time_ns()

    def summary(self) -> dict[str, object]:
        """``warnings_1h``, ``errors_1h``, ``last_error`` and its time (ns, 0 when none)."""
        cutoff = time.monotonic() - WINDOW_S
        with self._lock_counts:
            while self._records and self._records[0][0] < cutoff:
                self._records.popleft()
            errors = sum(1 for _, e in self._records if e)
            return {"warnings_1h": len(self._records) - errors, "errors_1h": errors,
                    "last_error": self.last_error, "last_error_ns": self.last_error_ns}


_installed: LogCounter | None = None
_install_lock = threading.Lock()


def log_counter() -> LogCounter:
    """The process's counter, put on the root logger the first time it is asked for."""
    global _installed
    with _install_lock:
        if _installed is None:
            _installed = LogCounter()
            logging.getLogger().addHandler(_installed)
        return _installed
