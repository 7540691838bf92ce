"""The order manager's journal: every order-book record, order and fill, in SQLite (WAL).

Layout of ``<run_dir>/journal.sqlite``:

* ``records``: the ``Outcome.record`` of every order-book call, in order. It is
  the source of truth: ``OrderBook.replay`` over these rows rebuilds the book
  after a crash (crash-only start-up).
* ``orders`` / ``fills``: the latest state of each order and every applied
  fill, kept for queries (sync snapshots, the CLI, the reconciler).
* ``alerts``: what the order book flagged (overfills, conflicting ids, ...).

Each step of an order is one transaction (the record, the order row, its fills
and alerts together), so a crash leaves either the whole step or none of it.

Durability: WAL with ``synchronous=NORMAL``. A commit is durable against a
crash of the process (the WAL is in the OS's page cache the moment the commit
returns); a power loss can lose the last commits since the most recent
checkpoint, never corrupt the file. After a power loss the start-up reconcile
with the broker (orders and fills of the day) restores what the journal
missed. The disk flushes of the checkpoints (folding the WAL back into the
file) run on a thread of their own (``WalCheckpointer``), so no order step
waits on one. ``FULL`` (an fsync per commit) costs a disk flush per order step; the
bench (``python -m bench.orders``) reports the figures with the setting in use.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from core.db import connect as open_db
from core.orders import Order, Outcome
from services.exchange.store import SAFETY_AUTOCHECKPOINT_PAGES, WalCheckpointer
from services.order_manager.entry import parse_client_order_id
from services.order_manager.ledger import LedgerStore, migrate_fills

JOURNAL_FILE = "journal.sqlite"
SYNCHRONOUS = "NORMAL"
DISK_FULL_TEXT = "database or disk is full"  # SQLite's own words for SQLITE_FULL

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    trading_date TEXT NOT NULL,
    op TEXT NOT NULL,
    client_order_id TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_date ON records (trading_date);
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    trading_date TEXT NOT NULL,
    code TEXT NOT NULL,
    side TEXT NOT NULL,
    order_type TEXT NOT NULL,
    qty INTEGER NOT NULL,
    price INTEGER NOT NULL,
    status TEXT NOT NULL,
    filled_qty INTEGER NOT NULL,
    remaining_qty INTEGER NOT NULL,
    avg_fill_price INTEGER NOT NULL,
    fees_won INTEGER NOT NULL,
    taxes_won INTEGER NOT NULL,
    broker_order_id TEXT NOT NULL,
    reason_code TEXT NOT NULL,
    reason_text TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    reply TEXT
);
CREATE INDEX IF NOT EXISTS orders_agent_date ON orders (agent_id, trading_date);
CREATE INDEX IF NOT EXISTS orders_date ON orders (trading_date);
CREATE INDEX IF NOT EXISTS orders_status_date ON orders (status, trading_date);
CREATE TABLE IF NOT EXISTS fills (
    exec_id TEXT PRIMARY KEY,
    client_order_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    trading_date TEXT NOT NULL,
    code TEXT NOT NULL,
    side TEXT NOT NULL,
    qty INTEGER NOT NULL,
    price INTEGER NOT NULL,
    fee_won INTEGER NOT NULL,
    tax_won INTEGER NOT NULL,
    broker_order_id TEXT NOT NULL,
    ts_ns INTEGER NOT NULL,
    ledger_date TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS fills_agent_date ON fills (agent_id, trading_date);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    trading_date TEXT NOT NULL,
    ts_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,
    client_order_id TEXT NOT NULL,
    text TEXT NOT NULL
);
"""

_INSERT_RECORD = "INSERT INTO records (trading_date, op, client_order_id, body) VALUES (?, ?, ?, ?)"
_UPSERT_ORDER = """
INSERT INTO orders (client_order_id, agent_id, trading_date, code, side, order_type, qty, price, status,
    filled_qty, remaining_qty, avg_fill_price, fees_won, taxes_won, broker_order_id, reason_code, reason_text,
    created_ns, updated_ns)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (client_order_id) DO UPDATE SET status = excluded.status, filled_qty = excluded.filled_qty,
    remaining_qty = excluded.remaining_qty, avg_fill_price = excluded.avg_fill_price,
    fees_won = excluded.fees_won, taxes_won = excluded.taxes_won, broker_order_id = excluded.broker_order_id,
    reason_code = excluded.reason_code, reason_text = excluded.reason_text, updated_ns = excluded.updated_ns
"""
_INSERT_FILL = """
INSERT OR IGNORE INTO fills (exec_id, client_order_id, agent_id, trading_date, code, side, qty, price,
    fee_won, tax_won, broker_order_id, ts_ns, ledger_date) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_ALERT = "INSERT INTO alerts (trading_date, ts_ns, kind, client_order_id, text) VALUES (?, ?, ?, ?, ?)"
_ORDER_COLUMNS = (
    "client_order_id", "agent_id", "trading_date", "code", "side", "order_type", "qty", "price", "status",
    "filled_qty", "remaining_qty", "avg_fill_price", "fees_won", "taxes_won", "broker_order_id", "reason_code",
    "reason_text", "created_ns", "updated_ns",
)
_FILL_COLUMNS = (
    "exec_id", "client_order_id", "agent_id", "trading_date", "code", "side", "qty", "price", "fee_won",
    "tax_won", "broker_order_id", "ts_ns", "ledger_date",
)


def trading_date_of(client_order_id: str, default_date: str) -> str:
    """The trading date written in a client order id, or ``default_date`` when it has none."""
    parsed = parse_client_order_id(client_order_id)
    return parsed.trading_date if parsed is not None else default_date


class Journal:
    """The SQLite journal of one run directory; one transaction per order step."""

    def __init__(self, path: Path, *, synchronous: str = SYNCHRONOUS) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"journal durability must be NORMAL or FULL, not {synchronous!r}")
        self.path = path
        self.synchronous = synchronous
        # autocommit mode: transactions are opened and closed explicitly, one per step
        self.db = open_db(path, synchronous=synchronous, check_same_thread=False, cached_statements=64,
                          autocheckpoint_pages=SAFETY_AUTOCHECKPOINT_PAGES)
        self.db.executescript(_SCHEMA)
        migrate_fills(self.db)
        self.ledger = LedgerStore(self.db)
        # each agent's latest fill (what its book must have applied to be up to date); kept as fills are written
        self.last_fill: dict[str, str] = dict(self.db.execute(
            "SELECT agent_id, exec_id FROM fills WHERE rowid IN (SELECT max(rowid) FROM fills GROUP BY agent_id)"))
        self.checkpointer = WalCheckpointer(path)
        self.commits = 0
        self.failing_writes = 0  # injected: this many next writes fail as on a full disk (see ``fail_next_writes``)

    def fail_next_writes(self, n: int) -> None:
        """Make the next ``n`` writes raise ``sqlite3.OperationalError`` as SQLite does on a full disk.

        For the durability and chaos tests (the order manager's ``fault`` command):
        a write refused by the disk must stop new orders, not lose or invent any.
        """
        if n < 0:
            raise ValueError(f"the number of failing writes must be >= 0, not {n}")
        self.failing_writes = n

    def _check_injected_failure(self) -> None:
        if self.failing_writes > 0:
            self.failing_writes -= 1
            raise sqlite3.OperationalError(DISK_FULL_TEXT)

    # --- writing -------------------------------------------------------------

    def write(self, outcomes: list[Outcome], orders: Mapping[str, Order], default_date: str,
              replies: Mapping[str, str] | None = None, *,
              before_commit: Callable[[], None] | None = None) -> None:
        """Journal the outcomes of one step in a single transaction.

        ``orders`` is the book's orders by client order id (the rows to
        refresh); ``replies`` (client order id -> JSON of the OrderEvent
        answered to the agent) is stored with the order, for duplicate requests.
        ``before_commit`` runs inside the open transaction, just before COMMIT
        (where the durability tests crash the process).
        An order's trading date is the one in its client order id, else ``default_date``.
        """
        self._check_injected_failure()
        db = self.db
        written: list[tuple[str, str]] = []  # (agent, exec id) of the fills this step adds
        db.execute("BEGIN")
        try:
            for out in outcomes:
                self._write_one(out, orders, default_date, written)
            if replies:
                db.executemany("UPDATE orders SET reply = ? WHERE client_order_id = ?",
                               [(body, coid) for coid, body in replies.items()])
            if before_commit is not None:
                before_commit()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.commits += 1
        self.last_fill.update(written)

    def _write_one(self, out: Outcome, orders: Mapping[str, Order], default_date: str,
                   written: list[tuple[str, str]]) -> None:
        db = self.db
        record = out.record
        coid = str(record.get("client_order_id") or (out.order.client_order_id if out.order else ""))
        date = trading_date_of(coid, default_date)
        db.execute(_INSERT_RECORD, (date, record["op"], coid, json.dumps(record, separators=(",", ":"))))
        touched = {t.client_order_id for t in out.transitions}
        if out.order is not None:
            touched.add(out.order.client_order_id)
        for order_coid in touched:
            order = orders.get(order_coid)
            if order is not None:
                self._upsert(order, trading_date_of(order_coid, default_date))
        for f in out.fills:
            order = orders.get(f.client_order_id)
            if order is None:
                continue
            fill_date = trading_date_of(f.client_order_id, default_date)
            # a fill counts on its day, or on the day the ledger is open on when its day is already rolled
            inserted = db.execute(_INSERT_FILL, (f.exec_id, f.client_order_id, order.agent_id, fill_date, order.code,
                                                 str(order.side), f.qty, f.price, f.fee_won, f.tax_won,
                                                 order.broker_order_id, f.ts_ns, max(fill_date, self.ledger.open_date)))
            if inserted.rowcount:
                written.append((order.agent_id, f.exec_id))
        for a in out.alerts:
            db.execute(_INSERT_ALERT, (date, int(record.get("now_ns", 0)), a.kind, a.client_order_id, a.text))

    def _upsert(self, o: Order, trading_date: str) -> None:
        self.db.execute(_UPSERT_ORDER, (
            o.client_order_id, o.agent_id, trading_date, o.code, str(o.side), str(o.order_type), o.qty, o.price,
            str(o.status), o.filled_qty, o.remaining_qty, o.avg_fill_price, o.fees_won, o.taxes_won,
            o.broker_order_id, o.reason_code, o.reason_text, o.created_ns, o.updated_ns,
        ))

    def write_alert(self, trading_date: str, ts_ns: int, kind: str, text: str) -> None:
        """Journal one alert of the order manager's own (also the probe that the disk takes writes again)."""
        self._check_injected_failure()
        self.db.execute(_INSERT_ALERT, (trading_date, ts_ns, kind, "", text))
        self.commits += 1

    # --- reading -------------------------------------------------------------

    def records(self) -> Iterator[dict[str, Any]]:
        """Every journaled order-book record, oldest first (what ``OrderBook.replay`` takes)."""
        for (body,) in self.db.execute("SELECT body FROM records ORDER BY seq"):
            yield json.loads(body)

    def replies(self) -> dict[str, str]:
        """The answer given to each order's request (JSON of an OrderEvent), where one was given."""
        return dict(self.db.execute("SELECT client_order_id, reply FROM orders WHERE reply IS NOT NULL"))

    def orders(self, *, agent_id: str | None = None, since: str = "", until: str = "99999999",
               open_only: bool = False) -> list[dict[str, Any]]:
        """Order rows of trading dates ``since`` to ``until`` (both included) as plain data, oldest first."""
        sql = f"SELECT {', '.join(_ORDER_COLUMNS)} FROM orders WHERE trading_date >= ? AND trading_date <= ?"
        args: list[Any] = [since, until]
        if agent_id is not None:
            sql += " AND agent_id = ?"
            args.append(agent_id)
        if open_only:  # listed (not NOT IN) so that the status index finds them without a scan of every day
            sql += " AND status IN ('new', 'submitted', 'accepted', 'partially_filled', 'cancel_pending')"
        sql += " ORDER BY created_ns, client_order_id"
        return [dict(zip(_ORDER_COLUMNS, row)) for row in self.db.execute(sql, args)]

    def fills(self, *, agent_id: str | None = None, since: str = "", until: str = "99999999",
              by_ledger_date: bool = False) -> list[dict[str, Any]]:
        """Fill rows of trading dates (or ledger dates) ``since`` to ``until`` as plain data, in journal order.

        Journal order is the order the fills were applied and published in,
        which is the order every book (the ledger's, the agent's) applies them.
        """
        column = "ledger_date" if by_ledger_date else "trading_date"
        sql = f"SELECT {', '.join(_FILL_COLUMNS)} FROM fills WHERE {column} >= ? AND {column} <= ?"
        args: list[Any] = [since, until]
        if agent_id is not None:
            sql += " AND agent_id = ?"
            args.append(agent_id)
        sql += " ORDER BY rowid"
        return [dict(zip(_FILL_COLUMNS, row)) for row in self.db.execute(sql, args)]

    def alerts(self) -> list[dict[str, Any]]:
        """Journaled alerts, oldest first."""
        cols = ("trading_date", "ts_ns", "kind", "client_order_id", "text")
        return [dict(zip(cols, row)) for row in self.db.execute(f"SELECT {', '.join(cols)} FROM alerts ORDER BY id")]

    # --- housekeeping --------------------------------------------------------

    def purge_before(self, trading_date: str) -> int:
        """Delete every row of trading days before ``trading_date`` (YYYYMMDD); returns the orders removed."""
        self.db.execute("BEGIN")
        try:
            removed = self.db.execute("DELETE FROM orders WHERE trading_date < ?", (trading_date,)).rowcount
            for table in ("records", "fills", "alerts"):
                self.db.execute(f"DELETE FROM {table} WHERE trading_date < ?", (trading_date,))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return removed

    def close(self) -> None:
        """Stop the checkpoint thread, then checkpoint and close the database."""
        self.checkpointer.close()
        self.db.close()
