"""Opening the stack's SQLite files: one place for the connection settings every writer shares.

Several processes open ``journal.sqlite`` at the same moment when the stack
starts (order manager, risk guard, reconciler, supervisor). Switching a fresh
file to WAL takes an exclusive lock, and SQLite answers ``database is locked``
to that switch without calling the busy handler when another connection is
doing the same; so the switch is retried here until ``busy_timeout_ms`` has
passed, and the busy timeout is set before anything else touches the file.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

BUSY_TIMEOUT_MS = 5000
_RETRY_SLEEP_S = 0.02


def connect(path: str | Path, *, synchronous: str = "NORMAL", busy_timeout_ms: int = BUSY_TIMEOUT_MS,
            check_same_thread: bool = True, cached_statements: int = 128,
            autocheckpoint_pages: int | None = None) -> sqlite3.Connection:
    """An autocommit connection in WAL mode with the given durability; the parent folder is created.

    Raises ``sqlite3.OperationalError`` when the file stays locked for longer
    than the busy timeout (another process holds it), with that reason.
    """
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000,
                         check_same_thread=check_same_thread, cached_statements=cached_statements)
    try:
        db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        deadline = time.monotonic() + busy_timeout_ms / 1000
        while True:
            try:
                db.execute("PRAGMA journal_mode=WAL").fetchall()
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise sqlite3.OperationalError(f"{path}: cannot switch to WAL: {exc}") from exc
                time.sleep(_RETRY_SLEEP_S)
        db.execute(f"PRAGMA synchronous={synchronous}")
        if autocheckpoint_pages is not None:
            db.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint_pages)}")
    except BaseException:
        db.close()
        raise
    return db
