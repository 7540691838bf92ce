"""Where the local KIS server keeps its state between runs: ``<state dir>/kis_sim.sqlite``.

The paper market's part (engine orders, fills, accounts, the clock) is the
paper exchange's own store (``services.exchange.store.ExchangeStore``) on the
same file; this module adds the KIS side: the KIS order records (ODNO,
original order, order type, what the daily query lists) and a small key/value
table (tokens, approval keys, the ODNO counter, sold-out dates, the market's
investor-flow history). Both sides are written in one transaction (``save``),
before the reply or the notice that reports a change leaves.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from core.matching import MatchingEngine
from services.exchange.store import ExchangeStore
from services.kis_sim.orders import ORDER_FIELDS, KisOrder, order_row

STORE_FILE = "kis_sim.sqlite"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS kis_orders ({", ".join(ORDER_FIELDS)}, PRIMARY KEY (odno)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kis_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""


class KisSimStore:
    """The KIS server's SQLite file."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STORE_FILE
        self.exchange = ExchangeStore(self.path)
        self.db = self.exchange.db
        self.db.executescript(_SCHEMA)
        self._upsert = (f"INSERT OR REPLACE INTO kis_orders ({', '.join(ORDER_FIELDS)}) "
                        f"VALUES ({', '.join('?' * len(ORDER_FIELDS))})")
        self._meta_written: dict[str, str] = {}

    def load(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]], dict[str, Any]]:
        """(the market's saved state or None, the KIS order rows, the KIS key/value state)."""
        market = self.exchange.load()
        rows = [dict(zip(ORDER_FIELDS, r)) for r in self.db.execute(
            f"SELECT {', '.join(ORDER_FIELDS)} FROM kis_orders ORDER BY odno")]
        meta = {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM kis_meta")}
        return market, rows, meta

    def save_kis(self, orders: Iterable[KisOrder], meta: dict[str, Any]) -> None:
        """The KIS records that changed and the key/value entries that differ, in one transaction."""
        rows = [order_row(o) for o in orders]
        fresh = {k: json.dumps(v, separators=(",", ":")) for k, v in meta.items()}
        fresh = {k: v for k, v in fresh.items() if self._meta_written.get(k) != v}
        if not rows and not fresh:
            return
        db = self.db
        db.execute("BEGIN")
        try:
            if rows:
                db.executemany(self._upsert, rows)
            if fresh:
                db.executemany("INSERT OR REPLACE INTO kis_meta VALUES (?, ?)", list(fresh.items()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._meta_written.clear()
            raise
        self._meta_written.update(fresh)

    def save_market(self, service: dict[str, Any], engine: MatchingEngine, *, everything: bool = False,
                    markets: bool = True) -> None:
        """The paper market's increment (the paper exchange's own save)."""
        self.exchange.save(service, engine, engine.take_changes(), [], everything=everything, markets=markets)

    def save(self, orders: Iterable[KisOrder], meta: dict[str, Any], service: dict[str, Any], engine: MatchingEngine,
             *, markets: bool = True) -> None:
        """The KIS records and the market's increment in one transaction: a crash keeps both or neither, so an
        execution is never in the KIS records without its cash and holding in the account (or the other way)."""
        rows = [order_row(o) for o in orders]
        fresh = {k: json.dumps(v, separators=(",", ":")) for k, v in meta.items()}
        fresh = {k: v for k, v in fresh.items() if self._meta_written.get(k) != v}

        def kis_side(db: Any) -> None:
            if rows:
                db.executemany(self._upsert, rows)
            if fresh:
                db.executemany("INSERT OR REPLACE INTO kis_meta VALUES (?, ?)", list(fresh.items()))

        try:
            self.exchange.save(service, engine, engine.take_changes(), [], markets=markets, also=kis_side)
        except BaseException:
            self._meta_written.clear()
            raise
        self._meta_written.update(fresh)

    def close(self) -> None:
        self.exchange.close()
