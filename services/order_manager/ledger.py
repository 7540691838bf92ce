"""The book of record in the order journal: daily openings, adjustments and the day roll (SQLite).

Tables of ``<run_dir>/journal.sqlite`` (beside the order manager's own, same
connection, so a fill and the ledger move in one file):

* ``ledger_books`` / ``ledger_positions``: the opening of each book (every
  agent's, and the account's, ``core.ledger.ACCOUNT``) on each ledger date:
  its cash, and per code the shares, book cost, realised PnL, fees and taxes
  to date. Openings are never deleted (retention archives orders and fills
  only).
* ``ledger_rolls``: one row per rolled date: which date it opened, when, and
  what it counted. Its presence makes a roll idempotent.
* ``ledger_adjustments``: every change no fill explains, with who and why.
* ``ledger_origins``: the opening each book was created with (what the
  reconciler measures the account against the sum of its agents from).

A fill counts on its ``ledger_date`` (column of the journal's ``fills``): the
trading date of its order, or the date the ledger is open on when that is
later (a fill of a day already rolled counts on the next). So the state at any
moment is the latest opening plus the fills and adjustments of that date and
after: O(today), never O(history).

The roll of date D (at its close, or at start-up for each day missed while the
stack was down, in order): closing = opening(D) + fills(D) + adjustments(D),
written as the opening of the next trading date in one transaction with its
``ledger_rolls`` row. A second roll of D changes nothing. A journal that does
not add up (a fill of an order it does not know, an opening of the next date
that differs from this closing) stops the roll with ``LedgerError`` naming the
row; the order manager halts the firm and alerts, and never guesses.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from core.ledger import ACCOUNT, Adjustment, Book, FillRow, Holding, LedgerError, apply_day, same_books

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_books (
    ledger_date TEXT NOT NULL,
    book TEXT NOT NULL,
    cash_won INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    PRIMARY KEY (ledger_date, book)
);
CREATE INDEX IF NOT EXISTS ledger_books_book ON ledger_books (book, ledger_date);
CREATE TABLE IF NOT EXISTS ledger_positions (
    ledger_date TEXT NOT NULL,
    book TEXT NOT NULL,
    code TEXT NOT NULL,
    qty INTEGER NOT NULL,
    cost_won INTEGER NOT NULL,
    realized_pnl_won INTEGER NOT NULL,
    fees_won INTEGER NOT NULL,
    taxes_won INTEGER NOT NULL,
    PRIMARY KEY (ledger_date, book, code)
);
CREATE TABLE IF NOT EXISTS ledger_rolls (
    ledger_date TEXT PRIMARY KEY,
    next_date TEXT NOT NULL,
    rolled_ns INTEGER NOT NULL,
    books INTEGER NOT NULL,
    fills INTEGER NOT NULL,
    adjustments INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_adjustments (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    adjustment_id TEXT NOT NULL UNIQUE,
    ledger_date TEXT NOT NULL,
    ts_ns INTEGER NOT NULL,
    agent_id TEXT NOT NULL,
    code TEXT NOT NULL,
    qty INTEGER NOT NULL,
    cash_won INTEGER NOT NULL,
    cost_won INTEGER NOT NULL,
    reason TEXT NOT NULL,
    who TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_adjustments_date ON ledger_adjustments (ledger_date);
CREATE TABLE IF NOT EXISTS ledger_origins (
    book TEXT PRIMARY KEY,
    ledger_date TEXT NOT NULL,
    opening TEXT NOT NULL
);
"""

_FILL_COLUMNS = "exec_id, client_order_id, agent_id, code, side, qty, price, fee_won, tax_won"
_ADJ_COLUMNS = "adjustment_id, agent_id, code, qty, cash_won, cost_won, reason, who, ts_ns"


def migrate_fills(db: sqlite3.Connection) -> None:
    """Give a journal from before the ledger its ``fills.ledger_date`` column (= the fill's trading date)."""
    cols = {r[1] for r in db.execute("PRAGMA table_info(fills)")}
    if "ledger_date" not in cols:
        db.execute("ALTER TABLE fills ADD COLUMN ledger_date TEXT NOT NULL DEFAULT ''")
        db.execute("UPDATE fills SET ledger_date = trading_date")
    db.execute("CREATE INDEX IF NOT EXISTS fills_ledger_date ON fills (ledger_date)")
    db.execute("CREATE INDEX IF NOT EXISTS fills_agent_ledger_date ON fills (agent_id, ledger_date)")


class LedgerStore:
    """Openings, adjustments and rolls over the journal's connection (one transaction each)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(_SCHEMA)
        row = db.execute("SELECT max(ledger_date) FROM ledger_books").fetchone()
        self.open_date: str = row[0] or ""  # the latest opening's date; "" until the ledger is created

    # --- reading ---------------------------------------------------------------

    def opening(self, date: str | None = None, book: str | None = None) -> dict[str, Book]:
        """The openings of ``date`` (default: the open date), of every book or of one."""
        date = self.open_date if date is None else date
        where, args = "ledger_date = ?", [date]
        if book is not None:
            where += " AND book = ?"
            args.append(book)
        books = {b: Book(cash) for b, cash in self.db.execute(
            f"SELECT book, cash_won FROM ledger_books WHERE {where}", args)}  # noqa: S608 - fixed clauses
        for b, code, *figures in self.db.execute(
                f"SELECT book, code, qty, cost_won, realized_pnl_won, fees_won, taxes_won FROM ledger_positions "  # noqa: S608
                f"WHERE {where}", args):
            if b in books:
                books[b].positions[code] = Holding(*figures)
        return books

    def fills(self, date: str, *, agent_id: str | None = None, exact: bool = False) -> list[FillRow]:
        """Fills counted on ``date`` (``exact``) or on it and after, in journal order."""
        sql = f"SELECT {_FILL_COLUMNS} FROM fills WHERE ledger_date {'=' if exact else '>='} ?"
        args: list[Any] = [date]
        if agent_id is not None:
            sql += " AND agent_id = ?"
            args.append(agent_id)
        return [FillRow(*r) for r in self.db.execute(sql + " ORDER BY rowid", args)]

    def adjustments(self, date: str, *, agent_id: str | None = None, exact: bool = False) -> list[Adjustment]:
        """Adjustments booked on ``date`` (``exact``) or on it and after, oldest first."""
        sql = f"SELECT {_ADJ_COLUMNS} FROM ledger_adjustments WHERE ledger_date {'=' if exact else '>='} ?"
        args: list[Any] = [date]
        if agent_id is not None:
            sql += " AND agent_id = ?"
            args.append(agent_id)
        return [Adjustment(*r) for r in self.db.execute(sql + " ORDER BY seq", args)]

    def current(self, book: str | None = None, fills: Iterable[FillRow] | None = None) -> dict[str, Book]:
        """The books now: the latest opening plus every fill and adjustment since (one book, or all).

        ``fills``: the fills since the open date when the caller has read them already.
        """
        if not self.open_date:
            return {}
        books = self.opening(book=book)
        agent = None if book in (None, ACCOUNT) else book
        if fills is None:
            fills = self.fills(self.open_date, agent_id=agent)
        return _apply_loose(books, fills, self.adjustments(self.open_date, agent_id=agent))

    def origins(self) -> dict[str, Book]:
        """The opening each book was created with."""
        return {b: Book.from_plain(json.loads(raw), f"origin of {b}")
                for b, raw in self.db.execute("SELECT book, opening FROM ledger_origins")}

    def rolled(self, date: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT next_date, rolled_ns, books, fills, adjustments FROM ledger_rolls "
                              "WHERE ledger_date = ?", (date,)).fetchone()
        if row is None:
            return None
        return dict(zip(("next_date", "rolled_ns", "books", "fills", "adjustments"), row))

    def dates(self) -> list[str]:
        """Every date with openings, oldest first."""
        return [r[0] for r in self.db.execute("SELECT DISTINCT ledger_date FROM ledger_books ORDER BY ledger_date")]

    def day(self, date: str) -> dict[str, Any]:
        """A date's openings and closings (the next opening once rolled, else computed now), as plain data."""
        opening = self.opening(date)
        if not opening:
            return {"ledger_date": date, "opening": {}, "closing": {}, "rolled": None, "adjustments": []}
        rolled = self.rolled(date)
        if rolled is not None:
            closing = self.opening(rolled["next_date"])
        else:
            closing = apply_day({b: bk.copy() for b, bk in opening.items()}, self.fills(date, exact=True),
                                self.adjustments(date, exact=True))
        return {"ledger_date": date, "opening": {b: bk.to_plain() for b, bk in opening.items()},
                "closing": {b: bk.to_plain() for b, bk in closing.items()}, "rolled": rolled,
                "adjustments": [a.to_plain() for a in self.adjustments(date, exact=True)]}

    # --- writing ---------------------------------------------------------------

    def ensure_books(self, date: str, fresh: Mapping[str, Book], now_ns: int) -> list[str]:
        """Open the ledger on ``date`` if it has no opening yet, and open each book of ``fresh`` it lacks.

        ``fresh`` is what a new book starts with (the roster's allocation and
        starting holding; the account's configured cash). A book opens on the
        ledger's open date; returns the books created.
        """
        if not self.open_date:  # a journal from before the ledger: open on its first day, the rolls catch up
            first = self.db.execute("SELECT min(ledger_date) FROM fills WHERE ledger_date != ''").fetchone()[0]
            date = min(date, first) if first else date
        date = self.open_date or date
        have = {r[0] for r in self.db.execute("SELECT book FROM ledger_origins")}
        missing = {b: bk for b, bk in fresh.items() if b not in have}
        if not missing:
            return []
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for b, bk in sorted(missing.items()):
                self._write_opening(date, b, bk, now_ns)
                self.db.execute("INSERT INTO ledger_origins (book, ledger_date, opening) VALUES (?, ?, ?)",
                                (b, date, json.dumps(bk.to_plain(), separators=(",", ":"))))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.open_date = date
        return sorted(missing)

    def adjust(self, adj: Adjustment, now_ns: int) -> tuple[bool, str]:
        """Book an adjustment on the open date; (False, why) when it cannot be, (True, "") when booked.

        A repeated ``adjustment_id`` is the same request again: nothing changes
        and (True, "duplicate") is answered.
        """
        if not self.open_date:
            return False, "the ledger is not open yet (the order manager has not seen the market's date)"
        if self.db.execute("SELECT 1 FROM ledger_adjustments WHERE adjustment_id = ?", (adj.adjustment_id,)).fetchone():
            return True, "duplicate"
        if not adj.reason.strip():
            return False, "an adjustment needs a reason"
        if adj.agent_id == ACCOUNT:
            return False, "an adjustment names the agent whose book it changes"
        books = self.current(adj.agent_id)
        book = books.get(adj.agent_id)
        if book is None:
            return False, f"agent {adj.agent_id!r} has no book in the ledger"
        account = self.current(ACCOUNT).get(ACCOUNT)
        for who, bk in ((adj.agent_id, book), ("the account", account)):
            problem = bk.check_adjustment(adj.code, adj.qty, adj.cash_won, adj.cost_won) if bk is not None else "no book"
            if problem is not None:
                return False, f"{who}: {problem}"
        self.db.execute(
            f"INSERT INTO ledger_adjustments ({_ADJ_COLUMNS}, ledger_date) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
            (adj.adjustment_id, adj.agent_id, adj.code, adj.qty, adj.cash_won, adj.cost_won, adj.reason, adj.who,
             now_ns, self.open_date))
        return True, ""

    def roll(self, date: str, next_date: str, now_ns: int) -> dict[str, Any]:
        """Close ``date`` into the opening of ``next_date``; idempotent; LedgerError when the journal does not add up."""
        done = self.rolled(date)
        if done is not None:
            return {"ledger_date": date, **done, "again": True}
        if next_date <= date:
            raise LedgerError(f"roll {date}", f"the next date {next_date} is not after it")
        opening = self.opening(date)
        if not opening:
            raise LedgerError(f"roll {date}", "no opening on that date")
        fills = self.fills(date, exact=True)
        adjustments = self.adjustments(date, exact=True)
        known = self._orders_of(fills)
        closing = apply_day(opening, fills, adjustments, known)
        existing = self.opening(next_date)
        if existing:
            problems = same_books(existing, closing)
            if problems:
                raise LedgerError(f"opening {next_date}", "does not match the closing of "
                                  f"{date}: " + "; ".join(problems[:3]))
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if not existing:
                for b, bk in sorted(closing.items()):
                    self._write_opening(next_date, b, bk, now_ns)
            self.db.execute("INSERT INTO ledger_rolls (ledger_date, next_date, rolled_ns, books, fills, adjustments) "
                            "VALUES (?, ?, ?, ?, ?, ?)", (date, next_date, now_ns, len(closing), len(fills),
                                                          len(adjustments)))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.open_date = max(self.open_date, next_date)
        return {"ledger_date": date, "next_date": next_date, "rolled_ns": now_ns, "books": len(closing),
                "fills": len(fills), "adjustments": len(adjustments), "again": False}

    def catch_up(self, today: str, next_date_of: Callable[[str], str], now_ns: int) -> list[dict[str, Any]]:
        """Roll every date from the open date up to ``today`` in order (a machine off over a long weekend)."""
        out = []
        while self.open_date and self.open_date < today:
            nxt = min(next_date_of(self.open_date), today)
            out.append(self.roll(self.open_date, nxt, now_ns))
        return out

    def _orders_of(self, fills: Iterable[FillRow]) -> dict[str, str]:
        ids = sorted({f.client_order_id for f in fills})
        known: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            known.update(self.db.execute(
                f"SELECT client_order_id, agent_id FROM orders WHERE client_order_id IN ({','.join('?' * len(chunk))})",  # noqa: S608
                chunk))
        return known

    def _write_opening(self, date: str, book: str, bk: Book, now_ns: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO ledger_books (ledger_date, book, cash_won, created_ns) VALUES (?, ?, ?, ?)",
                        (date, book, bk.cash_won, now_ns))
        self.db.executemany(
            "INSERT OR REPLACE INTO ledger_positions (ledger_date, book, code, qty, cost_won, realized_pnl_won, fees_won, "
            "taxes_won) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(date, book, c, h.qty, h.cost_won, h.realized_pnl_won, h.fees_won, h.taxes_won)
             for c, h in sorted(bk.positions.items()) if h.qty or h.cost_won or h.realized_pnl_won or h.fees_won
             or h.taxes_won])


def _apply_loose(books: dict[str, Book], fills: Iterable[FillRow], adjustments: Iterable[Adjustment]) -> dict[str, Book]:
    """Fills and adjustments over openings for a live view: each moves its agent's book and the account's where
    those are among ``books`` (a row of a book without an opening is left out here; the roll refuses it)."""
    for f in fills:
        for key in (f.agent_id, ACCOUNT):
            bk = books.get(key)
            if bk is not None:
                bk.apply_fill(f.code, f.side, f.qty, f.price, f.fee_won, f.tax_won)
    for a in adjustments:
        for key in (a.agent_id, ACCOUNT):
            bk = books.get(key)
            if bk is not None and bk.check_adjustment(a.code, a.qty, a.cash_won, a.cost_won) is None:
                bk.apply_adjustment(a.code, a.qty, a.cash_won, a.cost_won)
    return books
