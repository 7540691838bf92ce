"""The gateway's journal: ``<run_dir>/kis-gateway/gateway.sqlite`` (WAL), written before a reply leaves.

Orders (client order id, the request, then KIS's order number, branch and
time), the fills the firm was told of, and the cancel orders' numbers. A
restart reads it back (``load``); nothing else is needed to go on, because
what the journal does not know KIS's daily orders tell (``KisBook.on_daily``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import fields
from pathlib import Path
from typing import Any

from services.kis_gateway.book import FILL_FIELDS, ORDER_FIELDS, KisBook, KisOrder

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS orders ({", ".join(f + (" PRIMARY KEY" if f == "client_order_id" else "")
                                              for f in ORDER_FIELDS)});
CREATE TABLE IF NOT EXISTS fills ({", ".join(f + (" PRIMARY KEY" if f == "exec_id" else "") for f in FILL_FIELDS)});
CREATE TABLE IF NOT EXISTS cancels (trading_date, odno, client_order_id, PRIMARY KEY (trading_date, odno));
CREATE INDEX IF NOT EXISTS orders_by_date ON orders (trading_date);
"""
_UPSERT_ORDER = (f"INSERT OR REPLACE INTO orders ({', '.join(ORDER_FIELDS)}) "
                 f"VALUES ({', '.join('?' for _ in ORDER_FIELDS)})")
_INSERT_FILL = f"INSERT OR IGNORE INTO fills ({', '.join(FILL_FIELDS)}) VALUES ({', '.join('?' for _ in FILL_FIELDS)})"


class GatewayStore:
    """The SQLite file of one gateway."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        # as the order journal: WAL with NORMAL survives a crash of the process (kill -9) without an fsync per
        # commit; what a power cut could take back, KIS's daily orders give again (the catch-up)
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self._add_new_columns()
        self._saved_cancels: set[tuple[str, str]] = set()

    def _add_new_columns(self) -> None:
        """A journal written by an older gateway gets the order fields it lacks, at their defaults."""
        have = {row[1] for row in self.db.execute("PRAGMA table_info(orders)")}
        defaults = {f.name: f.default for f in fields(KisOrder)}
        for name in ORDER_FIELDS:
            if name not in have:
                self.db.execute(f"ALTER TABLE orders ADD COLUMN {name} DEFAULT {defaults[name]!r}")

    def load(self, book: KisBook, keep_from: str = "") -> None:
        """Read the journal into ``book`` (orders of ``keep_from`` or later, their fills, the cancels)."""
        orders = [dict(r) for r in self.db.execute("SELECT * FROM orders WHERE trading_date >= ?", (keep_from,))]
        coids = {o["client_order_id"] for o in orders}
        fills = [dict(r) for r in self.db.execute("SELECT * FROM fills") if r["client_order_id"] in coids]
        cancels = [(r["trading_date"], r["odno"], r["client_order_id"])
                   for r in self.db.execute("SELECT * FROM cancels WHERE trading_date >= ?", (keep_from,))]
        book.restore(orders, fills, cancels)
        self._saved_cancels = {(d, o) for d, o, _ in cancels}

    def save(self, book: KisBook) -> int:
        """Write what changed in ``book`` in one transaction; the number of rows written."""
        orders, fills = book.take_dirty()
        cancels = [(d, o, c) for (d, o), c in book.cancel_odnos.items() if (d, o) not in self._saved_cancels]
        if not orders and not fills and not cancels:
            return 0
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(_UPSERT_ORDER, [tuple(getattr(o, f) for f in ORDER_FIELDS) for o in orders])
            db.executemany(_INSERT_FILL, [tuple(getattr(f, k) for k in FILL_FIELDS) for f in fills])
            db.executemany("INSERT OR IGNORE INTO cancels VALUES (?, ?, ?)", cancels)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._saved_cancels.update((d, o) for d, o, _ in cancels)
        return len(orders) + len(fills) + len(cancels)

    def forget_before(self, trading_date: str) -> None:
        """Drop orders (and their fills and cancels) of days before ``trading_date``."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM fills WHERE client_order_id IN "
                   "(SELECT client_order_id FROM orders WHERE trading_date < ?)", (trading_date,))
        db.execute("DELETE FROM orders WHERE trading_date < ?", (trading_date,))
        db.execute("DELETE FROM cancels WHERE trading_date < ?", (trading_date,))
        db.execute("COMMIT")

    def counts(self) -> dict[str, Any]:
        return {t: self.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("orders", "fills", "cancels")}

    def close(self) -> None:
        self.db.close()
