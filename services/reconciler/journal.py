"""The reconciler's journal: table ``recon_reports`` in ``<run_dir>/journal.sqlite``.

Shared with the order manager and the risk guard, each in its own tables: WAL
mode, and a busy timeout so a write waits for another process's lock instead
of failing. One row per reconciliation, the report as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.db import connect as open_db


SCHEMA = """
CREATE TABLE IF NOT EXISTS recon_reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    report_id TEXT NOT NULL UNIQUE,
    ts_ns INTEGER NOT NULL,
    trigger TEXT NOT NULL,
    clean INTEGER NOT NULL,
    halted INTEGER NOT NULL,
    differences INTEGER NOT NULL,
    report TEXT NOT NULL
)
"""


class ReconJournal:
    """Appends reconciliation reports and reads back the latest."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = open_db(self.path, synchronous="NORMAL")
        self.db.execute(SCHEMA)

    def record(self, report: dict[str, Any]) -> None:
        """Commit one report (plain data with report_id, ts_ns, trigger, clean, halted, differences)."""
        self.db.execute(
            "INSERT OR REPLACE INTO recon_reports (report_id, ts_ns, trigger, clean, halted, differences, report)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (report["report_id"], report["ts_ns"], report["trigger"], int(report["clean"]), int(report["halted"]),
             len(report["differences"]), json.dumps(report, default=str)),
        )

    def latest(self) -> dict[str, Any] | None:
        """The last report, or None."""
        row = self.db.execute("SELECT report FROM recon_reports ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else json.loads(row[0])

    def close(self) -> None:
        self.db.close()
