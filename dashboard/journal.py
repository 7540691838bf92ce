"""Read-only access to the order manager's journal (``<run_dir>/journal.sqlite``) for history.

The dashboard never writes the journal: it opens it with ``mode=ro`` per query
(the OMS keeps it in WAL mode, so readers do not block the writer) and adapts
to the columns the tables have, so an older or newer journal still shows what
it holds. A missing journal, table or column yields an empty answer, not an
error page.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

KST = dt.timezone(dt.timedelta(hours=9))
MAX_ROWS = 2000


class JournalReader:
    """Queries the journal's orders and fills of one agent, grouped by trading day."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def present(self) -> bool:
        """Whether the journal file exists."""
        return self.path.exists()

    def _connect(self) -> sqlite3.Connection | None:
        if not self.present:
            return None
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=1.0)
        except sqlite3.Error:
            return None
        conn.row_factory = sqlite3.Row
        return conn

    def tables(self) -> dict[str, list[str]]:
        """Every table of the journal with its columns."""
        conn = self._connect()
        if conn is None:
            return {}
        try:
            names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {n: [c[1] for c in conn.execute(f'PRAGMA table_info("{n}")')] for n in names}
        except sqlite3.Error:
            return {}
        finally:
            conn.close()

    def rows_for_agent(self, table: str, agent_id: str, limit: int = MAX_ROWS) -> list[dict[str, Any]]:
        """The rows of ``table`` that belong to ``agent_id``, newest first."""
        columns = self.tables().get(table)
        if not columns or "agent_id" not in columns:
            return []
        order = next((c for c in ("ts_ns", "updated_ns", "created_ns", "rowid") if c in columns or c == "rowid"), "rowid")
        conn = self._connect()
        if conn is None:
            return []
        try:
            cur = conn.execute(
                f'SELECT * FROM "{table}" WHERE agent_id = ? ORDER BY {order} DESC LIMIT ?', (agent_id, limit)
            )
            return [dict(r) for r in cur.fetchall()]
        except sqlite3.Error:
            return []
        finally:
            conn.close()

    def history(self, agent_id: str) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """An agent's orders and fills from the journal by KST date (YYYY-MM-DD), newest day first."""
        days: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for kind in ("orders", "fills"):
            for row in self.rows_for_agent(kind, agent_id):
                ts = row.get("ts_ns") or row.get("created_ns") or row.get("updated_ns") or 0
                day = dt.datetime.fromtimestamp(int(ts) / 1e9, tz=KST).date().isoformat() if ts else "undated"
                days.setdefault(day, {"orders": [], "fills": []})[kind].append(row)
        return dict(sorted(days.items(), reverse=True))

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        conn = self._connect()
        if conn is None:
            return []
        try:
            return [dict(r) for r in conn.execute(sql, params).fetchall()]
        except sqlite3.Error:  # a table not there yet (a journal from before the ledger): nothing to show
            return []
        finally:
            conn.close()

    def opening_realized(self, ledger_date: str) -> dict[str, int]:
        """Each book's realised PnL at the opening of ``ledger_date`` (YYYYMMDD): the baseline of "today"."""
        rows = self._query("SELECT b.book AS book, COALESCE(SUM(p.realized_pnl_won), 0) AS realized "
                           "FROM ledger_books b LEFT JOIN ledger_positions p "
                           "ON p.ledger_date = b.ledger_date AND p.book = b.book "
                           "WHERE b.ledger_date = ? GROUP BY b.book", (ledger_date,))
        return {str(r["book"]): int(r["realized"]) for r in rows}

    def daily_pnl(self, agent_id: str = "ACCOUNT", limit: int = 400) -> list[dict[str, Any]]:
        """The daily reports of one book, oldest first: each day's realised, unrealised at the close, costs,
        trades, and the running total PnL (realised to date plus unrealised at that close)."""
        rows = self._query("SELECT trading_date, realized_pnl_won, unrealized_pnl_won, fees_won, taxes_won, fills, "
                           "orders FROM daily_reports WHERE agent_id = ? ORDER BY trading_date DESC LIMIT ?",
                           (agent_id, limit))
        rows.reverse()
        realized = 0
        for r in rows:
            realized += int(r["realized_pnl_won"])
            r["realized_to_date_won"] = realized
            r["total_pnl_won"] = realized + int(r["unrealized_pnl_won"])
        return rows
