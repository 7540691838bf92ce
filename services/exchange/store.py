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
the right trade against an fsync per order.

An older ``state.json`` (the previous whole-state format) is imported once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from core.matching import EngineChanges, Execution, MatchingEngine, Order

STORE_FILE = "exchange.sqlite"
LEGACY_STATE_FILE = "state.json"
SCHEMA_VERSION = 1

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
"""


class StateFileError(Exception):
    """The saved state exists but cannot be read back (the exchange refuses to start over it)."""


def store_path(run_path: Path) -> Path:
    """``<run_dir>/exchange/exchange.sqlite``."""
    return run_path / "exchange" / STORE_FILE


def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


class ExchangeStore:
    """The exchange's SQLite file: load everything at start, then save increments."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self._upsert_order = (f"INSERT OR REPLACE INTO orders ({', '.join(_ORDER_COLUMNS)}) "
                              f"VALUES ({_placeholders(len(_ORDER_COLUMNS))})")
        self._insert_fill = (f"INSERT OR REPLACE INTO fills ({', '.join(_FILL_COLUMNS)}) "
                             f"VALUES ({_placeholders(len(_FILL_COLUMNS))})")

    def close(self) -> None:
        """Close the file (a checkpoint folds the WAL back in)."""
        self.db.close()

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
    ) -> None:
        """Write one increment in one transaction.

        ``service`` is the shell's own small state (seed, days, clock);
        ``changes`` comes from ``engine.take_changes()``; ``rejected`` holds
        today's refusals not saved yet. ``everything`` rewrites all of today's
        orders and fills (the first save, or after an import).
        """
        header = engine.header_state()
        db = self.db
        db.execute("BEGIN")
        try:
            if changes.new_day or everything:
                db.execute("DELETE FROM orders")
                db.execute("DELETE FROM fills")
                db.execute("DELETE FROM rejected")
            orders: Iterable[Order] = engine.orders_today() if everything else changes.orders
            fills: Iterable[Execution] = engine.fills_today() if everything else changes.fills
            db.executemany(self._upsert_order, [_order_row(o) for o in orders])
            db.executemany(self._insert_fill, [_fill_row(f) for f in fills])
            db.executemany("INSERT OR REPLACE INTO rejected VALUES (?, ?)",
                           [(coid, json.dumps(ev, separators=(",", ":"))) for coid, ev in rejected])
            accounts = header.pop("accounts")
            markets = header.pop("markets")
            db.execute("DELETE FROM accounts")
            db.execute("DELETE FROM positions")
            db.executemany(f"INSERT INTO accounts VALUES ({_placeholders(1 + len(_ACCOUNT_COLUMNS))})",
                           [(a, *(acc[c] for c in _ACCOUNT_COLUMNS)) for a, acc in accounts.items()])
            db.executemany("INSERT INTO positions VALUES (?, ?, ?, ?)",
                           [(a, code, q, cost) for a, acc in accounts.items()
                            for code, (q, cost) in acc["holdings"].items()])
            db.executemany(f"INSERT OR REPLACE INTO markets VALUES ({_placeholders(1 + len(_MARKET_COLUMNS))})",
                           [(code, *(m[c] for c in _MARKET_COLUMNS)) for code, m in markets.items()])
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
                ("schema", json.dumps(SCHEMA_VERSION)),
                ("service", json.dumps(dict(service), separators=(",", ":"))),
                ("engine_header", json.dumps(header, separators=(",", ":"))),
            ])
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def _order_row(order: Order) -> tuple[Any, ...]:
    row = [getattr(order, c) for c in _ORDER_COLUMNS]
    return tuple(v.value if hasattr(v, "value") else v for v in row)


def _fill_row(fill: Execution) -> tuple[Any, ...]:
    row = [getattr(fill, c) for c in _FILL_COLUMNS]
    return tuple(v.value if hasattr(v, "value") else v for v in row)
