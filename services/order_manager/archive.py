"""Retention that never forgets: old orders, order events and fills move from the journal to per-day archive files.

``<run_dir>/archive/<YYYYMMDD>/orders.parquet``, ``order_events.parquet`` and
``fills.parquet`` (zstd, like the recorded bars) hold every row of a trading
date once it is older than ``retention_days`` and its fills are rolled into
the ledger; the ledger's openings stay in the journal for ever, so no book
loses anything. A day is moved in two steps, each safe to repeat: the files
are written (merged with what an earlier move left, keyed by the rows' own
ids) and read back, then the rows are deleted from the journal in one
transaction. A crash between the two leaves the rows in both, and the next
move writes the same files again.

``read_orders`` / ``read_fills`` give archived rows in the journal's shape, so
``trader orders --date`` and ``--since`` read journal and archive alike.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

ARCHIVE_DIR = "archive"
TABLES = {  # journal table -> (archive file, key column)
    "orders": ("orders.parquet", "client_order_id"),
    "records": ("order_events.parquet", "seq"),
    "fills": ("fills.parquet", "exec_id"),
}


def archive_path(run_path: Path) -> Path:
    return run_path / ARCHIVE_DIR


def archivable_days(db: sqlite3.Connection, cutoff: str, open_date: str) -> list[str]:
    """Trading dates before ``cutoff`` with rows in the journal whose fills all count before ``open_date``."""
    days: set[str] = set()
    for table in TABLES:
        days.update(r[0] for r in db.execute(
            f"SELECT DISTINCT trading_date FROM {table} WHERE trading_date < ?", (cutoff,)))  # noqa: S608 - fixed names
    held = {r[0] for r in db.execute(
        "SELECT DISTINCT trading_date FROM fills WHERE trading_date < ? AND ledger_date >= ?", (cutoff, open_date or "0"))}
    open_orders = {r[0] for r in db.execute(
        "SELECT DISTINCT trading_date FROM orders WHERE trading_date < ? AND status NOT IN "
        "('filled', 'canceled', 'rejected', 'expired')", (cutoff,))}
    return sorted(days - held - open_orders)


def _rows(db: sqlite3.Connection, table: str, date: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    cur = db.execute(f"SELECT * FROM {table} WHERE trading_date = ? ORDER BY rowid", (date,))  # noqa: S608
    return [c[0] for c in cur.description], cur.fetchall()


def _write(path: Path, columns: list[str], rows: list[tuple[Any, ...]], key: str) -> int:
    """Write ``rows`` merged with the file's own (the journal's row wins on the same key); returns rows in the file."""
    import pyarrow as pa  # only when a day is archived or read back: the order manager runs without it
    import pyarrow.parquet as pq

    merged: dict[Any, dict[str, Any]] = {}
    if path.exists():
        for r in pq.read_table(path).to_pylist():
            merged[r[key]] = r
    for row in rows:
        d = dict(zip(columns, row))
        merged[d[key]] = d
    table = pa.Table.from_pylist(list(merged.values()))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return table.num_rows


def archive_day(db: sqlite3.Connection, run_path: Path, date: str) -> dict[str, int]:
    """Move one trading date's orders, order events and fills to its archive folder; rows moved per table."""
    import pyarrow.parquet as pq  # only when a day is archived or read back

    folder = archive_path(run_path) / date
    folder.mkdir(parents=True, exist_ok=True)
    moved: dict[str, int] = {}
    for table, (name, key) in TABLES.items():
        columns, rows = _rows(db, table, date)
        if not rows:
            continue
        written = _write(folder / name, columns, rows, key)
        keys = {r[key] for r in pq.read_table(folder / name, columns=[key]).to_pylist()}
        if written < len(rows) or not all(dict(zip(columns, r))[key] in keys for r in rows):
            raise OSError(f"archive {folder / name} does not hold every row of {table} {date}")
        moved[table] = len(rows)
    db.execute("BEGIN IMMEDIATE")
    try:
        for table in moved:
            db.execute(f"DELETE FROM {table} WHERE trading_date = ?", (date,))  # noqa: S608
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return moved


def _read(run_path: Path, table: str, since: str, until: str, agent_id: str | None) -> list[dict[str, Any]]:
    root = archive_path(run_path)
    if not root.is_dir():
        return []
    name = TABLES[table][0]
    out: list[dict[str, Any]] = []
    for folder in sorted(root.iterdir()):
        if not (folder.name.isdigit() and len(folder.name) == 8 and since <= folder.name <= until):
            continue
        path = folder / name
        if not path.exists():
            continue
        import pyarrow.parquet as pq  # only once there is an archive to read

        rows = pq.read_table(path).to_pylist()
        out.extend(r for r in rows if agent_id is None or r.get("agent_id") == agent_id)
    return out


def read_orders(run_path: Path, *, since: str = "", until: str = "99999999",
                agent_id: str | None = None) -> list[dict[str, Any]]:
    """Archived order rows of trading dates ``since`` to ``until``, oldest first."""
    rows = _read(run_path, "orders", since, until, agent_id)
    rows.sort(key=lambda o: (o["created_ns"], o["client_order_id"]))
    return rows


def read_fills(run_path: Path, *, since: str = "", until: str = "99999999",
               agent_id: str | None = None) -> list[dict[str, Any]]:
    """Archived fill rows of trading dates ``since`` to ``until``, in journal order."""
    return _read(run_path, "fills", since, until, agent_id)
