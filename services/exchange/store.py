"""Where the paper exchange keeps its state between runs: ``<run_dir>/exchange/exchange.sqlite``.

Incremental: each save writes, in one transaction, only the orders the engine
reports changed (upserted), the fills booked since the last save (inserted),
today's new refusals, and the small rest whole (accounts, holdings, markets,
counters, the clock). The service saves before the reply or notice that reports
a change leaves, so what a client was told is on disk.

Durability: WAL journal with ``synchronous=NORMAL``. A committed transaction
survives the exchange process dying at any instant (kill -9 included): it is
in the WAL file, which SQLite replays on the next open. An operating-system
crash or power loss may lose the last transactions before the WAL is
checkpointed (the file itself stays consistent); for a paper exchange that is
the right trade against an fsync per order. Checkpoints (the only fsyncs) run
on a thread of their own (``WalCheckpointer``), so no request waits on a disk
flush.

An older ``state.json`` (the previous whole-state format) is imported once.

Closed days: at each night the day's orders and executions are kept in
``past_days`` (the newest ``PAST_DAYS_KEPT``), so the queries of a day that
has closed still answer after the night, and after a restart.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from core.db import connect as open_db
from core.matching import EngineChanges, Execution, MatchingEngine, Order

STORE_FILE = "exchange.sqlite"
LEGACY_STATE_FILE = "state.json"
SCHEMA_VERSION = 1

CHECKPOINT_INTERVAL_S = 1.0
SAFETY_AUTOCHECKPOINT_PAGES = 20_000  # if checkpoints stopped, the writer folds the WAL in at about 80 MB
_log = logging.getLogger(__name__)

_ORDER_COLUMNS = tuple(f.name for f in fields(Order))
_FILL_COLUMNS = tuple(f.name for f in fields(Execution))
_MARKET_COLUMNS = ("base_price", "last_price", "recent_volume", "volume_ts_ns", "bid_taken", "ask_taken")
_ACCOUNT_COLUMNS = ("cash_won", "fees_won", "taxes_won", "realized_pnl_won")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders ({", ".join(_ORDER_COLUMNS)}, PRIMARY KEY (broker_order_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fills ({", ".join(_FILL_COLUMNS)}, PRIMARY KEY (exec_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS accounts (account_id TEXT PRIMARY KEY, {", ".join(_ACCOUNT_COLUMNS)}) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS positions (account_id TEXT, code TEXT, qty INTEGER, book_cost_won INTEGER,
                                      PRIMARY KEY (account_id, code)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS markets (code TEXT PRIMARY KEY, {", ".join(_MARKET_COLUMNS)}) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rejected (client_order_id TEXT PRIMARY KEY, event TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS past_days (trading_date TEXT PRIMARY KEY, orders TEXT NOT NULL, fills TEXT NOT NULL)
    WITHOUT ROWID;
"""


class StateFileError(Exception):
    """The saved state exists but cannot be read back (the exchange refuses to start over it)."""


def store_path(run_path: Path) -> Path:
    """``<run_dir>/exchange/exchange.sqlite``."""
    return run_path / "exchange" / STORE_FILE


def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


class WalCheckpointer:
    """Folds a WAL file back into its database from a thread of its own, so that no writer waits on the fsync.

    With ``synchronous=NORMAL`` a commit only appends to the WAL; the disk
    flushes happen at checkpoints. SQLite's automatic checkpoint runs inside
    the commit that crosses the threshold, which made one request in a few
    hundred wait several milliseconds; here a PASSIVE checkpoint runs every
    ``interval_s`` on a separate connection (sqlite3 releases the GIL while it
    works), and the writer's automatic checkpoint is only a safety net.
    """

    def __init__(self, path: Path, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        self.path = path
        self.interval_s = interval_s
        self.checkpoints = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"checkpoint:{path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout=1000")
            while not self._stop.wait(self.interval_s):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as exc:  # busy or locked: the next round tries again
                    _log.warning("checkpoint of %s failed: %s", self.path, exc)
        finally:
            db.close()

    def close(self) -> None:
        """Stop the thread (after its current checkpoint, if one is running)."""
        self._stop.set()
        self._thread.join(timeout=10)


PAST_DAYS_KEPT = 10  # closed days whose orders and executions stay queryable


class ExchangeStore:
    """The exchange's SQLite file: load everything at start, then save increments."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = open_db(path, synchronous="NORMAL", check_same_thread=False,
                          autocheckpoint_pages=SAFETY_AUTOCHECKPOINT_PAGES)
        self.db.executescript(_SCHEMA)
        self.checkpointer = WalCheckpointer(path)
        # what the file holds of the small tables, so a save writes only the rows that differ
        self._written: dict[str, Any] = {}
        self._upsert_order = (f"INSERT OR REPLACE INTO orders ({', '.join(_ORDER_COLUMNS)}) "
                              f"VALUES ({_placeholders(len(_ORDER_COLUMNS))})")
        self._insert_fill = (f"INSERT OR REPLACE INTO fills ({', '.join(_FILL_COLUMNS)}) "
                             f"VALUES ({_placeholders(len(_FILL_COLUMNS))})")

    def close(self) -> None:
        """Stop the checkpoints and close the file (closing folds the WAL back in)."""
        self.checkpointer.close()
        self.db.close()

    # --- days gone by --------------------------------------------------------------

    def save_past_day(self, trading_date: str, orders: list[dict[str, Any]], fills: list[dict[str, Any]],
                      keep: int = PAST_DAYS_KEPT) -> None:
        """Keep a closed day's orders and executions (as the wire has them), and the ``keep`` newest days only.

        A broker answers for the days before today too: a client that was away
        at the close asks for that day's executions after the night.
        """
        db = self.db
        db.execute("BEGIN")
        try:
            db.execute("INSERT OR REPLACE INTO past_days VALUES (?, ?, ?)",
                       (trading_date, json.dumps(orders, separators=(",", ":")), json.dumps(fills, separators=(",", ":"))))
            db.execute("DELETE FROM past_days WHERE trading_date NOT IN "
                       "(SELECT trading_date FROM past_days ORDER BY trading_date DESC LIMIT ?)", (keep,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def past_day(self, trading_date: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        """A closed day's (orders, fills), or None when it is not kept."""
        row = self.db.execute("SELECT orders, fills FROM past_days WHERE trading_date = ?", (trading_date,)).fetchone()
        return None if row is None else (json.loads(row[0]), json.loads(row[1]))

    def past_dates(self) -> list[str]:
        """The closed days kept, newest first."""
        return [r[0] for r in self.db.execute("SELECT trading_date FROM past_days ORDER BY trading_date DESC")]

    # --- loading -------------------------------------------------------------------

    def load(self) -> dict[str, Any] | None:
        """The saved state in the service's format (engine state under "engine"), or None if there is none.

        Falls back to importing a legacy ``state.json`` next to the file.
        """
        meta = {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")}
        if not meta:
            return self._legacy()
        if meta.get("schema") != SCHEMA_VERSION:
            raise StateFileError(f"{self.path}: schema {meta.get('schema')!r}, expected {SCHEMA_VERSION}")
        try:
            engine: dict[str, Any] = dict(meta["engine_header"])
            engine["markets"] = {
                row[0]: dict(zip(_MARKET_COLUMNS, row[1:]))
                for row in self.db.execute(f"SELECT code, {', '.join(_MARKET_COLUMNS)} FROM markets")
            }
            holdings: dict[str, dict[str, list[int]]] = {}
            for account_id, code, qty, cost in self.db.execute(
                    "SELECT account_id, code, qty, book_cost_won FROM positions"):
                holdings.setdefault(account_id, {})[code] = [qty, cost]
            engine["accounts"] = {
                row[0]: {**dict(zip(_ACCOUNT_COLUMNS, row[1:])), "holdings": holdings.get(row[0], {})}
                for row in self.db.execute(f"SELECT account_id, {', '.join(_ACCOUNT_COLUMNS)} FROM accounts")
            }
            engine["orders"] = [dict(zip(_ORDER_COLUMNS, row)) for row in self.db.execute(
                f"SELECT {', '.join(_ORDER_COLUMNS)} FROM orders ORDER BY seq")]
            engine["fills"] = [dict(zip(_FILL_COLUMNS, row)) for row in self.db.execute(
                f"SELECT {', '.join(_FILL_COLUMNS)} FROM fills ORDER BY exec_id")]
            rejected = {coid: json.loads(ev) for coid, ev in self.db.execute(
                "SELECT client_order_id, event FROM rejected")}
            return {**meta["service"], "engine": engine, "rejected": rejected}
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFileError(f"{self.path}: cannot read the saved state back: {exc!r}") from exc

    def _legacy(self) -> dict[str, Any] | None:
        legacy = self.path.parent / LEGACY_STATE_FILE
        try:
            raw = legacy.read_bytes()
        except FileNotFoundError:
            return None
        try:
            state = json.loads(raw)
        except ValueError as exc:
            raise StateFileError(f"{legacy} is not valid JSON: {exc}") from exc
        if not isinstance(state, dict):
            raise StateFileError(f"{legacy} does not hold a state object")
        return state

    # --- saving --------------------------------------------------------------------

    def save(
        self,
        service: Mapping[str, Any],
        engine: MatchingEngine,
        changes: EngineChanges,
        rejected: Iterable[tuple[str, Mapping[str, Any]]],
        *,
        everything: bool = False,
        markets: bool = True,
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        """Write one increment in one transaction (with what ``also`` writes on the same connection, if given).

        ``service`` is the shell's own small state (seed, days, clock);
        ``changes`` comes from ``engine.take_changes()``; ``rejected`` holds
        today's refusals not saved yet. ``everything`` rewrites all of today's
        orders and fills (the first save, or after an import). ``markets=False``
        leaves the simulated market's prices to the next save that has them (an
        order's own save: orders, accounts and counters are what must not wait).
        """
        header = engine.header_state(markets=markets or everything)
        db = self.db
        db.execute("BEGIN")
        try:
            if changes.new_day or everything:
                db.execute("DELETE FROM orders")
                db.execute("DELETE FROM fills")
                db.execute("DELETE FROM rejected")
            orders: Iterable[Order] = engine.orders_today() if everything else changes.orders
            fills: Iterable[Execution] = engine.fills_today() if everything else changes.fills
            for sql, new_rows in ((self._upsert_order, [_order_row(o) for o in orders]),
                                  (self._insert_fill, [_fill_row(f) for f in fills]),
                                  ("INSERT OR REPLACE INTO rejected VALUES (?, ?)",
                                   [(coid, json.dumps(ev, separators=(",", ":"))) for coid, ev in rejected])):
                if new_rows:
                    db.executemany(sql, new_rows)
            accounts = header.pop("accounts")
            market_states = header.pop("markets", None)
            rows = {
                "accounts": [(a, *(acc[c] for c in _ACCOUNT_COLUMNS)) for a, acc in accounts.items()],
                "positions": [(a, code, q, cost) for a, acc in accounts.items()
                              for code, (q, cost) in acc["holdings"].items()],
                "markets": [(code, *(m[c] for c in _MARKET_COLUMNS)) for code, m in (market_states or {}).items()],
                "meta": [("schema", json.dumps(SCHEMA_VERSION)),
                         ("service", json.dumps(dict(service), separators=(",", ":"))),
                         ("engine_header", json.dumps(header, separators=(",", ":")))],
            }
            if everything:
                self._written.clear()
                for table in rows:
                    if table != "meta":
                        db.execute(f"DELETE FROM {table}")
            written = self._written
            for table, table_rows in rows.items():
                fresh = [r for r in table_rows if written.get(_row_key(table, r)) != r]
                if fresh:
                    db.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({_placeholders(len(fresh[0]))})", fresh)
            if also is not None:
                also(db)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._written.clear()  # unsure what the file holds now: the next save writes every row
            raise
        for table, table_rows in rows.items():
            for r in table_rows:
                written[_row_key(table, r)] = r


def _row_key(table: str, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """The primary key of a row of one of the small tables."""
    return (table, *row[:2]) if table == "positions" else (table, row[0])


def _order_row(order: Order) -> tuple[Any, ...]:
    row = [getattr(order, c) for c in _ORDER_COLUMNS]
    return tuple(v.value if hasattr(v, "value") else v for v in row)


def _fill_row(fill: Execution) -> tuple[Any, ...]:
    row = [getattr(fill, c) for c in _FILL_COLUMNS]
    return tuple(v.value if hasattr(v, "value") else v for v in row)
