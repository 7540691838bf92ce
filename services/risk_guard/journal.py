"""The risk guard's journal of trading-state changes: table ``risk_state_changes`` in ``<run_dir>/journal.sqlite``.

The guard shares the stack's journal file with the order manager and the
reconciler, each in its own tables. The file is in WAL mode so readers never
block the writer, and every connection waits up to ``core.db.BUSY_TIMEOUT_MS`` for
another process's write lock instead of failing. A state change is committed
(synchronous=FULL: there are few, and a halt must survive a crash) before it
is published or answered, so the last row is the state to restore at start.
"""

from __future__ import annotations

from pathlib import Path

from core.db import connect as open_db
from core.risk import TradingState
from services.risk_guard.guard import StateChange


SCHEMA = """
CREATE TABLE IF NOT EXISTS risk_state_changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ns INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    who TEXT NOT NULL
)
"""


class RiskJournal:
    """Appends trading-state changes and reads back the latest one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = open_db(self.path, synchronous="FULL")
        self.db.execute(SCHEMA)

    def record(self, change: StateChange) -> None:
        """Commit one change."""
        self.db.execute(
            "INSERT INTO risk_state_changes (ts_ns, state, reason, who) VALUES (?, ?, ?, ?)",
            (change.ts_ns, change.state.value, change.reason, change.who),
        )

    def latest(self) -> StateChange | None:
        """The last recorded change, or None if there has been none."""
        row = self.db.execute(
            "SELECT state, reason, who, ts_ns FROM risk_state_changes ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        return StateChange(TradingState(row[0]), row[1], row[2], row[3])

    def history(self, limit: int = 50) -> list[StateChange]:
        """The latest changes, newest first."""
        rows = self.db.execute(
            "SELECT state, reason, who, ts_ns FROM risk_state_changes ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [StateChange(TradingState(r[0]), r[1], r[2], r[3]) for r in rows]

    def close(self) -> None:
        self.db.close()
