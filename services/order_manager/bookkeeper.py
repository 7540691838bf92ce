"""The order manager's book-keeping: the ledger opened, rolled, adjusted, archived and read by everyone.

The ``OrderDesk`` moves orders; the ``Bookkeeper`` keeps the books they move
(``services.order_manager.ledger`` in the same journal). It

* opens the ledger on the market's first date it sees, and a book for every
  agent of the roster (its allocation and starting holding) and for the
  account (``broker.account_cash_won``) the first time it meets them;
* rolls each date at its close, and at start-up every date missed while the
  stack was down (``catch_up``), then moves days older than ``retention_days``
  to the archive (``services.order_manager.archive``);
* books adjustments (checked: a known agent and code, a reason, no holding
  below zero);
* answers what everyone reads: an agent's sync (its opening, and the orders,
  fills and adjustments since), the journal state the risk guard and the
  reconciler start from, positions, a day's openings and closings, and orders
  of any date from journal and archive alike.

A ledger that does not add up raises ``LedgerError``; the service halts the
firm and alerts with the row it names.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import krx
from core.ledger import ACCOUNT, Adjustment, Book, FillRow, Holding
from services.order_manager import archive
from services.order_manager.desk import fill_row_as_fill, order_row_as_event
from services.order_manager.entry import parse_client_order_id
from services.order_manager.journal import Journal

log = logging.getLogger("order-manager.bookkeeper")
TERMINAL = ("filled", "canceled", "rejected", "expired")


@dataclass(frozen=True, slots=True)
class BookStart:
    """What a new book starts with: cash and holdings {code: (qty, avg_price)}."""

    cash_won: int
    holdings: Mapping[str, tuple[int, int]]

    def book(self) -> Book:
        return Book(self.cash_won, {c: Holding(q, q * p) for c, (q, p) in self.holdings.items() if q})


class AdjustmentRefused(ValueError):
    """An adjustment that cannot be booked, with the reason."""


def next_trading_date(date: str) -> str:
    """The KRX trading date after ``date`` (YYYYMMDD), or the next calendar day beyond the calendar's range."""
    day = dt.datetime.strptime(date, "%Y%m%d").date()
    try:
        return krx.next_trading_day(day).strftime("%Y%m%d")
    except krx.CalendarRangeError:
        return (day + dt.timedelta(days=1)).strftime("%Y%m%d")


class Bookkeeper:
    """The ledger of one journal, for one roster."""

    def __init__(self, journal: Journal, run_path: Path, starts: Mapping[str, BookStart], account_cash_won: int,
                 codes: set[str], retention_days: int) -> None:
        self.journal = journal
        self.ledger = journal.ledger
        self.run_path = run_path
        self.starts = dict(starts)
        self.account_cash_won = account_cash_won
        self.codes = codes
        self.retention_days = retention_days
        self.problem = ""  # the last LedgerError's text, until a roll succeeds again

    @property
    def open_date(self) -> str:
        return self.ledger.open_date

    # --- the day -------------------------------------------------------------------

    def open_day(self, trading_date: str, now_ns: int) -> list[dict[str, Any]]:
        """The market is on ``trading_date``: open the ledger and new books, and roll every date up to it."""
        if not trading_date:
            return []
        fresh = {agent: s.book() for agent, s in self.starts.items()}
        fresh[ACCOUNT] = Book(self.account_cash_won)
        for agent in self._agents_in_journal():
            fresh.setdefault(agent, Book(0))  # an agent no longer in the roster still has its book
        created = self.ledger.ensure_books(trading_date, fresh, now_ns)
        if created:
            log.info("ledger: opened %s on %s", ", ".join(created), self.open_date)
        rolled = self.ledger.catch_up(trading_date, next_trading_date, now_ns)
        for r in rolled:
            if not r.get("again"):
                log.info("ledger: rolled %s into %s (%d book(s), %d fill(s), %d adjustment(s))", r["ledger_date"],
                         r["next_date"], r["books"], r["fills"], r["adjustments"])
        self.problem = ""
        return rolled

    def close_day(self, trading_date: str, now_ns: int) -> dict[str, Any] | None:
        """At the close of ``trading_date``: roll it into the next trading date, then archive what retention moves."""
        if not trading_date or not self.open_date or self.open_date > trading_date:
            return None
        self.open_day(trading_date, now_ns)  # dates missed before this one, in order
        result = self.ledger.roll(trading_date, next_trading_date(trading_date), now_ns)
        self.problem = ""
        result["archived"] = self.archive(trading_date)
        return result

    def archive(self, trading_date: str) -> dict[str, dict[str, int]]:
        """Move the journal's days older than the retention to the archive; rows moved per day and table."""
        day = dt.datetime.strptime(trading_date, "%Y%m%d").date()
        cutoff = (day - dt.timedelta(days=self.retention_days)).strftime("%Y%m%d")
        moved = {}
        for date in archive.archivable_days(self.journal.db, cutoff, self.open_date):
            moved[date] = archive.archive_day(self.journal.db, self.run_path, date)
            log.info("archived %s: %s", date, moved[date])
        self.journal.db.execute("DELETE FROM alerts WHERE trading_date < ?", (cutoff,))
        return moved

    def _agents_in_journal(self) -> list[str]:
        return [r[0] for r in self.journal.db.execute("SELECT DISTINCT agent_id FROM orders")]

    # --- adjustments -------------------------------------------------------------------

    def adjust(self, args: Mapping[str, Any], now_ns: int) -> dict[str, Any]:
        """Book one adjustment; AdjustmentRefused names what is wrong and nothing changes."""
        agent_id, code, reason = args.get("agent_id"), args.get("code"), args.get("reason")
        qty, cash, cost = args.get("qty", 0), args.get("cash_won", 0), args.get("cost_won", 0)
        who = str(args.get("who") or "operator")
        if not isinstance(agent_id, str) or not agent_id:
            raise AdjustmentRefused("an adjustment names an agent (agent_id)")
        if agent_id not in self.starts and agent_id not in self.ledger.opening(book=agent_id):
            raise AdjustmentRefused(f"unknown agent {agent_id!r}")
        if not isinstance(code, str) or code not in self.codes:
            raise AdjustmentRefused(f"unknown code {code!r}")
        for name, value in (("qty", qty), ("cash_won", cash), ("cost_won", cost)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise AdjustmentRefused(f"{name} must be a whole number, not {value!r}")
        if not qty and not cash:
            raise AdjustmentRefused("an adjustment changes shares (qty) or cash (cash_won)")
        if not isinstance(reason, str) or not reason.strip():
            raise AdjustmentRefused("an adjustment needs a reason")
        adjustment_id = str(args.get("adjustment_id") or f"adj-{uuid.uuid4().hex[:16]}")
        adj = Adjustment(adjustment_id, agent_id, code, qty, cash, cost, reason.strip()[:500], who[:100], now_ns)
        booked, why = self.ledger.adjust(adj, now_ns)
        if not booked:
            raise AdjustmentRefused(why)
        return {**adj.to_plain(), "ledger_date": self.open_date, "duplicate": why == "duplicate"}

    # --- what everyone reads ---------------------------------------------------------

    def sync(self, agent_id: str) -> dict[str, Any]:
        """An agent's opening on the open date, and its orders, fills and adjustments since.

        Before the ledger has a book for the agent (a journal that has not seen
        the market's date yet, an agent new to the roster) there is no opening:
        the agent starts from its allocation, and every order and fill it has
        is in the answer.
        """
        opening = self.ledger.opening(book=agent_id).get(agent_id) if self.open_date else None
        date = self.open_date if opening is not None else ""
        orders = self.journal.orders(agent_id=agent_id, since=date)
        highest = 0
        for o in orders:
            parsed = parse_client_order_id(o["client_order_id"])
            if parsed is not None:
                highest = max(highest, parsed.n)
        fills = self.journal.fills(agent_id=agent_id, since=date, by_ledger_date=True)
        return {"agent_id": agent_id, "since": date, "ledger_date": date,
                "opening": opening.to_plain() if opening is not None else None,
                "adjustments": [a.to_plain() for a in self.ledger.adjustments(date, agent_id=agent_id)]
                if opening is not None else [],
                "orders": [order_row_as_event(o) for o in orders], "fills": [fill_row_as_fill(f) for f in fills],
                "max_client_order_n": highest, "last_exec_id": self.journal.last_fill.get(agent_id, "")}

    def journal_state(self, trading_date: str) -> dict[str, Any]:
        """What the risk guard and the reconciler start from: openings, the orders and fills since, the books now."""
        date = self.open_date
        if not date:
            return {"trading_date": trading_date, "ledger_date": "", "orders": [], "fills": [], "day_fills": [], "openings": {},
                    "adjustments": [], "ledger": {}, "origins": {}}
        orders = self.journal.orders(since=date) + [
            o for o in self.journal.orders(until=date, open_only=True) if o["trading_date"] < date]
        fills = self.journal.fills(since=date, by_ledger_date=True)
        current = self.ledger.current(fills=[FillRow(f["exec_id"], f["client_order_id"], f["agent_id"], f["code"],
                                                     f["side"], f["qty"], f["price"], f["fee_won"], f["tax_won"])
                                             for f in fills])
        account = current.get(ACCOUNT, Book(0))
        return {
            "trading_date": trading_date, "ledger_date": date,
            "orders": [order_row_as_event(o) for o in orders], "fills": [fill_row_as_fill(f) for f in fills],
            # the fills of the ledger's date by their own trading date: what the broker lists as today's
            "day_fills": [fill_row_as_fill(f) for f in fills if f["trading_date"] == date],
            "openings": {b: bk.to_plain() for b, bk in self.ledger.opening().items()},
            "adjustments": [a.to_plain() for a in self.ledger.adjustments(date)],
            "ledger": {b: bk.to_plain() for b, bk in current.items()},
            "origins": {b: bk.to_plain() for b, bk in self.ledger.origins().items()},
            # the shape core.reconcile reads: the account's holdings and cash, each agent's holdings
            "positions": {c: h.qty for c, h in account.positions.items() if h.qty},
            "cash_won": account.cash_won,
            "agents": {b: {"positions": {c: h.qty for c, h in bk.positions.items() if h.qty}, "cash_won": bk.cash_won,
                           "last_exec_id": self.journal.last_fill.get(b, "")}
                       for b, bk in current.items() if b != ACCOUNT},
        }

    def positions(self) -> dict[str, Any]:
        """The books now, per agent and for the account (holdings with average price, cash, realised PnL, costs)."""
        current = self.ledger.current()
        adjustments = self.ledger.adjustments("")

        def view(book: str, bk: Book) -> dict[str, Any]:
            return {"cash_won": bk.cash_won, "realized_pnl_won": bk.realized_pnl_won, "fees_won": bk.fees_won,
                    "taxes_won": bk.taxes_won,
                    "positions": {c: {"qty": h.qty, "avg_price": round(h.avg_price), "cost_won": h.cost_won,
                                      "realized_pnl_won": h.realized_pnl_won}
                                  for c, h in sorted(bk.positions.items()) if h.qty},
                    "adjustments": [a.to_plain() for a in adjustments if book in (ACCOUNT, a.agent_id)]}

        account = current.get(ACCOUNT, Book(0))
        return {"ledger_date": self.open_date,
                "agents": {b: view(b, bk) for b, bk in sorted(current.items()) if b != ACCOUNT},
                "account": {c: h.qty for c, h in sorted(account.positions.items()) if h.qty},
                "account_book": view(ACCOUNT, account)}

    def day(self, date: str) -> dict[str, Any]:
        """A ledger date's openings and closings (the daily report's figures)."""
        return self.ledger.day(date)

    def orders(self, *, agent_id: str | None, since: str, until: str, open_only: bool) -> list[dict[str, Any]]:
        """Order rows of trading dates ``since`` to ``until`` from the journal and the archive alike."""
        rows = self.journal.orders(agent_id=agent_id, since=since, until=until, open_only=open_only)
        if not open_only:
            seen = {o["client_order_id"] for o in rows}
            old = [o for o in archive.read_orders(self.run_path, since=since, until=until, agent_id=agent_id)
                   if o["client_order_id"] not in seen]
            rows = sorted(old + rows, key=lambda o: (o["trading_date"], o["created_ns"], o["client_order_id"]))
        for o in rows:
            o.pop("reply", None)
        return rows
