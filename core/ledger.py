"""The book of record's arithmetic: a day's opening, its fills and adjustments, and its closing (pure).

The order journal keeps, for each trading date, the opening of every book
(each agent's, and the account's): the cash, and per code the quantity, the
book cost, the realised PnL, fees and taxes to date. A day closes as

    closing = opening + the day's fills + the day's adjustments

and the next trading date opens with that closing. The state at any moment is
the latest opening plus what followed it, so rebuilding a book costs the day's
fills, never the history.

The arithmetic is the agent's own (``core.portfolio``, average cost method):
``book_trade`` is the one place where an execution moves a holding, and the
agent's ``Portfolio`` calls it too, so an agent's book and its ledger entry
agree to the won by construction.

An adjustment is a change of a book that no fill explains (a dividend in
shares, a split, a transfer, a trade made outside the firm): shares in or out
(shares out take their share of the book cost with them, like a sale without
PnL), cash in or out, and optionally the book cost of shares coming in.
Anything that would leave a holding negative is refused with ``LedgerError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ACCOUNT = "@account"  # the account's book (an agent id can never start with '@')


class LedgerError(ValueError):
    """The ledger cannot take a row: what is wrong and which row (``where``)."""

    def __init__(self, where: str, text: str) -> None:
        super().__init__(f"{where}: {text}")
        self.where = where
        self.text = text


@dataclass(slots=True)
class Holding:
    """One code in one book: shares, their book cost, and the PnL, fees and taxes realised in it to date."""

    qty: int = 0
    cost_won: int = 0
    realized_pnl_won: int = 0
    fees_won: int = 0
    taxes_won: int = 0

    def to_plain(self) -> dict[str, int]:
        return {"qty": self.qty, "cost_won": self.cost_won, "realized_pnl_won": self.realized_pnl_won,
                "fees_won": self.fees_won, "taxes_won": self.taxes_won}

    @property
    def avg_price(self) -> float:
        """Average purchase price (fees excluded); 0 when flat."""
        return self.cost_won / self.qty if self.qty else 0.0


def book_trade(h: Any, side: str, qty: int, price: int, fee_won: int, tax_won: int) -> tuple[int, int]:
    """Apply one execution to a holding; returns (the cash it moves, the PnL it realises).

    A buy adds its trade value to the book cost (fees are not in the average)
    and realises its fee; a sell of ``q`` out of ``Q`` shares takes
    ``cost * q // Q`` out (all of it when the position closes) and realises
    ``value - cost out - fee - tax``.
    """
    notional = price * qty
    h.fees_won += fee_won
    h.taxes_won += tax_won
    if side == "buy":
        h.qty += qty
        h.cost_won += notional
        cash = -(notional + fee_won)
        pnl = -fee_won - tax_won
    else:
        removed = h.cost_won if qty >= h.qty else h.cost_won * qty // h.qty
        h.qty -= qty
        h.cost_won -= removed
        cash = notional - fee_won - tax_won
        pnl = notional - removed - fee_won - tax_won
    h.realized_pnl_won += pnl
    return cash, pnl


def book_shares(h: Any, qty: int, cost_won: int = 0) -> None:
    """Shares in (``qty`` > 0, adding ``cost_won`` to the book cost) or out (taking their share of the cost).

    The caller has checked that the holding stays >= 0.
    """
    if qty >= 0:
        h.qty += qty
        h.cost_won += cost_won
        return
    out = -qty
    removed = h.cost_won if out >= h.qty else h.cost_won * out // h.qty
    h.qty -= out
    h.cost_won -= removed


@dataclass(slots=True)
class Book:
    """One book of the ledger: cash and holdings."""

    cash_won: int = 0
    positions: dict[str, Holding] = field(default_factory=dict)

    def holding(self, code: str) -> Holding:
        h = self.positions.get(code)
        if h is None:
            h = self.positions[code] = Holding()
        return h

    def qty(self, code: str) -> int:
        h = self.positions.get(code)
        return h.qty if h is not None else 0

    def apply_fill(self, code: str, side: str, qty: int, price: int, fee_won: int, tax_won: int) -> None:
        cash, _ = book_trade(self.holding(code), side, qty, price, fee_won, tax_won)
        self.cash_won += cash

    def check_adjustment(self, code: str, qty: int, cash_won: int, cost_won: int = 0) -> str | None:
        """Why an adjustment cannot be booked here, or None."""
        held = self.qty(code)
        if held + qty < 0:
            return f"it would leave {held + qty} shares of {code} (holding {held})"
        if cost_won < 0:
            return f"the book cost of shares coming in cannot be negative ({cost_won})"
        if cost_won and qty <= 0:
            return "a book cost goes only with shares coming in"
        return None

    def apply_adjustment(self, code: str, qty: int, cash_won: int, cost_won: int = 0) -> None:
        problem = self.check_adjustment(code, qty, cash_won, cost_won)
        if problem is not None:
            raise LedgerError(f"adjustment {code}", problem)
        if qty or cost_won:
            book_shares(self.holding(code), qty, cost_won)
        self.cash_won += cash_won

    def copy(self) -> Book:
        return Book(self.cash_won, {c: Holding(h.qty, h.cost_won, h.realized_pnl_won, h.fees_won, h.taxes_won)
                                    for c, h in self.positions.items()})

    @property
    def realized_pnl_won(self) -> int:
        return sum(h.realized_pnl_won for h in self.positions.values())

    @property
    def fees_won(self) -> int:
        return sum(h.fees_won for h in self.positions.values())

    @property
    def taxes_won(self) -> int:
        return sum(h.taxes_won for h in self.positions.values())

    def to_plain(self) -> dict[str, Any]:
        """JSON/msgpack-safe: cash, totals and every code ever held (flat ones keep their realised PnL)."""
        return {"cash_won": self.cash_won, "realized_pnl_won": self.realized_pnl_won, "fees_won": self.fees_won,
                "taxes_won": self.taxes_won,
                "positions": {c: h.to_plain() for c, h in sorted(self.positions.items())}}

    @classmethod
    def from_plain(cls, raw: Mapping[str, Any], where: str = "book") -> Book:
        """The inverse of ``to_plain``; LedgerError on anything malformed."""
        if not isinstance(raw, Mapping):
            raise LedgerError(where, f"a book must be a mapping, not {type(raw).__name__}")
        cash = raw.get("cash_won")
        if type(cash) is not int:
            raise LedgerError(where, f"cash_won must be an integer, not {cash!r}")
        book = cls(cash)
        positions = raw.get("positions") or {}
        if not isinstance(positions, Mapping):
            raise LedgerError(where, "positions must be a mapping of code to holding")
        for code, h in positions.items():
            if not isinstance(h, Mapping):
                raise LedgerError(f"{where} {code}", "a holding must be a mapping")
            values = [h.get(k, 0) for k in ("qty", "cost_won", "realized_pnl_won", "fees_won", "taxes_won")]
            if any(type(v) is not int for v in values):
                raise LedgerError(f"{where} {code}", f"holding figures must be integers: {dict(h)!r}")
            book.positions[str(code)] = Holding(*values)
        return book


@dataclass(frozen=True, slots=True)
class FillRow:
    """A journaled execution as the ledger reads it."""

    exec_id: str
    client_order_id: str
    agent_id: str
    code: str
    side: str
    qty: int
    price: int
    fee_won: int
    tax_won: int


@dataclass(frozen=True, slots=True)
class Adjustment:
    """A journaled change of one agent's book (and of the account's) that no fill explains."""

    adjustment_id: str
    agent_id: str
    code: str
    qty: int
    cash_won: int
    cost_won: int
    reason: str
    who: str
    ts_ns: int

    def to_plain(self) -> dict[str, Any]:
        return {"adjustment_id": self.adjustment_id, "agent_id": self.agent_id, "code": self.code, "qty": self.qty,
                "cash_won": self.cash_won, "cost_won": self.cost_won, "reason": self.reason, "who": self.who,
                "ts_ns": self.ts_ns}


def apply_day(books: dict[str, Book], fills: Iterable[FillRow], adjustments: Iterable[Adjustment],
              known_orders: Mapping[str, str] | None = None) -> dict[str, Book]:
    """Move ``books`` (agent id or ACCOUNT -> Book, changed in place) by fills then adjustments; returns them.

    Each fill moves its agent's book and the account's; so does each
    adjustment. ``known_orders`` (client order id -> agent id), when given, is
    the journal's orders: a fill of an order it does not know, or of another
    agent than its order's, is an inconsistency, and so is a fill or an
    adjustment of an agent without an opening (LedgerError naming the row).
    """
    account = books.get(ACCOUNT)
    if account is None:
        raise LedgerError("account", "the ledger has no opening for the account")
    for f in fills:
        if known_orders is not None:
            owner = known_orders.get(f.client_order_id)
            if owner is None:
                raise LedgerError(f"fill {f.exec_id}", f"its order {f.client_order_id} is not in the journal")
            if owner != f.agent_id:
                raise LedgerError(f"fill {f.exec_id}", f"booked to {f.agent_id} but its order belongs to {owner}")
        book = books.get(f.agent_id)
        if book is None:
            raise LedgerError(f"fill {f.exec_id}", f"agent {f.agent_id} has no opening in the ledger")
        if f.qty <= 0 or f.price <= 0 or f.side not in ("buy", "sell"):
            raise LedgerError(f"fill {f.exec_id}", f"not an execution: {f.side} {f.qty} @ {f.price}")
        book.apply_fill(f.code, f.side, f.qty, f.price, f.fee_won, f.tax_won)
        account.apply_fill(f.code, f.side, f.qty, f.price, f.fee_won, f.tax_won)
    for a in adjustments:
        book = books.get(a.agent_id)
        if book is None:
            raise LedgerError(f"adjustment {a.adjustment_id}", f"agent {a.agent_id} has no opening in the ledger")
        try:
            book.apply_adjustment(a.code, a.qty, a.cash_won, a.cost_won)
            account.apply_adjustment(a.code, a.qty, a.cash_won, a.cost_won)
        except LedgerError as exc:
            raise LedgerError(f"adjustment {a.adjustment_id}", exc.text) from None
    return books


def same_books(a: Mapping[str, Book], b: Mapping[str, Book]) -> list[str]:
    """Where two sets of books differ (empty when equal); flat holdings with no history count as absent."""
    def plain(book: Book) -> dict[str, Any]:
        d = book.to_plain()
        d["positions"] = {c: h for c, h in d["positions"].items() if any(h.values())}
        return d

    out = []
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        if left is None or right is None:
            out.append(f"{key}: only in {'the first' if right is None else 'the second'}")
        elif plain(left) != plain(right):
            out.append(f"{key}: {plain(left)} != {plain(right)}")
    return out
