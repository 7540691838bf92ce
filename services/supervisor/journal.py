"""The supervisor's side of the journal and the run directory: daily reports and retention.

The journal is the stack's ``<run_dir>/journal.sqlite`` (WAL, shared with the
order manager, the risk guard and the reconciler, hence the busy timeout). The
supervisor reads the order manager's ``orders`` and ``fills`` tables (read
only), keeps its own ``daily_reports`` table, finds reports the journal has
moved past (rows of a reported day written after its report: an order refused
after the close, a fill or a cancel confirmed late, a broker that re-opened the
day after a restart), and at the day roll deletes the
rows older than the retention of every table that has a ``trading_date`` column
(but the order manager's orders, order events and fills, which it archives), and the dated files of the run directory (bars, reports, agents'
day files) likewise.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from core.db import connect as open_db
from services.supervisor.report import ACCOUNT, OPEN_STATUSES, REPORT_COLUMNS

JOURNAL_FILE = "journal.sqlite"
ARCHIVED_BY_ORDER_MANAGER = frozenset({"orders", "records", "fills"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS daily_reports (
    trading_date TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    orders INTEGER NOT NULL,
    fills INTEGER NOT NULL,
    bought_qty INTEGER NOT NULL,
    sold_qty INTEGER NOT NULL,
    bought_won INTEGER NOT NULL,
    sold_won INTEGER NOT NULL,
    fees_won INTEGER NOT NULL,
    taxes_won INTEGER NOT NULL,
    realized_pnl_won INTEGER NOT NULL,
    unrealized_pnl_won INTEGER NOT NULL,
    open_orders INTEGER NOT NULL,
    adjusted_qty INTEGER NOT NULL DEFAULT 0,
    adjusted_won INTEGER NOT NULL DEFAULT 0,
    end_positions TEXT NOT NULL,
    written_ns INTEGER NOT NULL,
    PRIMARY KEY (trading_date, agent_id)
);
"""
_DATED_NAME = re.compile(r"^(\d{8}|\d{4}-\d{2}-\d{2})(\.[a-z0-9.]+)?$")


class DayJournal:
    """Reads the day's orders and fills, writes daily reports, purges old rows."""

    def __init__(self, run_path: Path) -> None:
        self.path = run_path / JOURNAL_FILE
        self.db = open_db(self.path, synchronous="FULL")
        self.db.executescript(_SCHEMA)
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(daily_reports)")}
        for column in ("adjusted_qty", "adjusted_won"):  # a journal from before adjustments
            if column not in columns:
                self.db.execute(f"ALTER TABLE daily_reports ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")

    def _tables(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _rows(self, table: str, until_date: str) -> list[dict[str, Any]]:
        if table not in self._tables():
            return []
        cur = self.db.execute(f"SELECT * FROM {table} WHERE trading_date <= ?", (until_date,))  # noqa: S608 - fixed names
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row)) for row in cur]

    def orders(self, until_date: str) -> list[dict[str, Any]]:
        """The order manager's order rows of every retained day up to ``until_date``."""
        return sorted(self._rows("orders", until_date), key=lambda o: (o["created_ns"], o["client_order_id"]))

    def fills(self, until_date: str) -> list[dict[str, Any]]:
        """The order manager's fill rows of every retained day up to ``until_date``, in journal order."""
        return sorted(self._rows("fills", until_date), key=lambda f: (f["ts_ns"], f["exec_id"]))

    def unreported_days(self, before: str) -> list[str]:
        """Trading days before ``before`` with orders in the journal but no daily report (a close nobody rolled)."""
        if "orders" not in self._tables():
            return []
        return [r[0] for r in self.db.execute(
            "SELECT DISTINCT trading_date FROM orders WHERE trading_date < ? AND trading_date NOT IN "
            "(SELECT trading_date FROM daily_reports) ORDER BY trading_date", (before,))]

    def stale_reports(self) -> list[str]:
        """Reported days whose journal rows no longer add up to their report (late rows: rewrite those reports).

        A report is compared on its ACCOUNT row: orders, open orders, fills,
        fees and taxes of the day against the same figures counted in the
        journal now. A day whose rows are all gone (purged) is not stale.
        """
        tables = self._tables()
        if "daily_reports" not in tables:
            return []
        journal: dict[str, list[int]] = {}
        if "orders" in tables:
            open_list = ", ".join(f"'{s}'" for s in sorted(OPEN_STATUSES))
            for date, n, n_open in self.db.execute(
                    f"SELECT trading_date, count(*), coalesce(sum(status IN ({open_list})), 0) FROM orders "  # noqa: S608
                    "GROUP BY trading_date"):
                journal[date] = [int(n), int(n_open), 0, 0, 0]
        if "fills" in tables:
            for date, n, fees, taxes in self.db.execute(
                    "SELECT trading_date, count(*), coalesce(sum(fee_won), 0), coalesce(sum(tax_won), 0) FROM fills "
                    "GROUP BY trading_date"):
                journal.setdefault(date, [0, 0, 0, 0, 0])[2:] = [int(n), int(fees), int(taxes)]
        stale = []
        for date, *reported in self.db.execute(
                "SELECT trading_date, orders, open_orders, fills, fees_won, taxes_won FROM daily_reports "
                "WHERE agent_id = ? ORDER BY trading_date", (ACCOUNT,)):
            now = journal.get(date)
            if now is not None and now != [int(x) for x in reported]:
                stale.append(date)
        return stale

    def open_orders(self, trading_date: str) -> list[dict[str, Any]]:
        """Order rows of ``trading_date`` that are not in a final state."""
        return [o for o in self._rows("orders", trading_date)
                if o["trading_date"] == trading_date and o["status"] not in ("filled", "canceled", "rejected", "expired")]

    def write_report(self, rows: Iterable[Mapping[str, Any]], now_ns: int) -> int:
        """Store the report rows (a second run of the same day replaces them); returns the rows written."""
        n = 0
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for r in rows:
                values = [r[c] for c in REPORT_COLUMNS[:-1]] + [json.dumps(r["end_positions"], sort_keys=True), now_ns]
                self.db.execute(f"INSERT OR REPLACE INTO daily_reports ({', '.join(REPORT_COLUMNS)}, written_ns) "
                                f"VALUES ({', '.join('?' * (len(REPORT_COLUMNS) + 1))})", values)
                n += 1
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return n

    def report(self, trading_date: str) -> list[dict[str, Any]]:
        """A stored report's rows, positions decoded."""
        cur = self.db.execute(f"SELECT {', '.join(REPORT_COLUMNS)} FROM daily_reports WHERE trading_date = ? "
                              "ORDER BY agent_id", (trading_date,))
        out = []
        for row in cur:
            d = dict(zip(REPORT_COLUMNS, row))
            d["end_positions"] = json.loads(d["end_positions"])
            out.append(d)
        return out

    def purge_before(self, cutoff_date: str) -> dict[str, int]:
        """Delete rows of every dated table older than ``cutoff_date`` (YYYYMMDD); rows removed per table.

        The order manager's orders, order events and fills are not deleted
        here: it archives them (``services.order_manager.archive``), and the
        ledger's openings are kept for ever.
        """
        removed: dict[str, int] = {}
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for table in sorted(self._tables() - ARCHIVED_BY_ORDER_MANAGER):
                cols = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
                if "trading_date" in cols:
                    n = self.db.execute(f"DELETE FROM {table} WHERE trading_date < ?", (cutoff_date,)).rowcount  # noqa: S608
                    if n:
                        removed[table] = n
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return removed

    def close(self) -> None:
        """Close the connection."""
        self.db.close()


def write_report_csv(folder: Path, trading_date: str, rows: Iterable[Mapping[str, Any]]) -> Path:
    """``<folder>/<YYYYMMDD>.csv``, one line per report row (positions as JSON), written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{trading_date}.csv"
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(REPORT_COLUMNS)
        for r in rows:
            w.writerow([json.dumps(r[c], sort_keys=True) if c == "end_positions" else r[c] for c in REPORT_COLUMNS])
    tmp.replace(path)
    return path


def retention_cutoff(trading_date: str, retention_days: int) -> str:
    """The first date (YYYYMMDD) kept when ``trading_date`` is today and ``retention_days`` are kept."""
    day = dt.datetime.strptime(trading_date, "%Y%m%d").date()
    return (day - dt.timedelta(days=retention_days)).strftime("%Y%m%d")


def purge_dated_files(folders: Iterable[Path], cutoff_date: str) -> list[Path]:
    """Remove files and folders named by a date (YYYYMMDD or YYYY-MM-DD, any suffix) older than the cutoff."""
    removed = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            m = _DATED_NAME.match(entry.name)
            if not m or m.group(1).replace("-", "") >= cutoff_date:
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return sorted(removed)
