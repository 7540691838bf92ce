"""The agent's book: cash, holds, holdings, costs and PnL, exact to the won.

One ``Portfolio`` per agent; it may hold several codes (a pair strategy) but
has one cash account: the allocation given at start.

How the numbers are computed (average cost method):

- Each position keeps its **book cost** ``cost_won`` as an integer: the
  starting holding enters at ``start_qty * start_avg_price``; a buy adds
  ``price * qty`` (trade price only, **buy fees are not in the average**);
  a sell of ``q`` out of ``Q`` shares removes ``cost_won * q // Q`` (all of it
  when the position closes), so the book cost never drifts from whole won.
- ``avg_price = cost_won / qty`` (what the broker shows as the purchase
  average, fees excluded).
- **Fees and taxes go to realised PnL when they are paid**: a buy's fee is
  realised at the buy; a sell realises
  ``notional - cost removed - fee - tax`` (= ``(sell price - avg) * qty`` minus
  that sell's fee and tax, exact to the won).
- ``unrealised = last price * qty - cost_won`` (before the costs of selling).
  Hence, always and exactly:
  ``cash + holdings value == allocation + start cost + realised + unrealised``.
- Break-even: ``bep_rate = (1 + f) / (1 - f - t)`` with ``f`` the commission
  rate and ``t`` the sell tax rate of the current trade date; the break-even
  price is ``avg_price * bep_rate`` and the return after costs is
  ``last * (1 - f - t) / (avg * (1 + f)) - 1``.
- Cash on hold: a limit buy holds ``price * qty`` plus its commission; a
  market buy holds ``qty * upper limit price`` plus its commission. A fill
  releases the hold pro rata (the last fill releases what remains); a
  cancel, reject or expiry releases the rest. Cash available = cash - on hold.

Event methods take time as an argument; nothing here reads a clock. Refusals
are returned as reason codes (strings), never raised.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.costs import DEFAULT_COSTS, TAX_DENOMINATOR, CostModel, tax_rate_ppm
from core.ledger import book_shares, book_trade

KST = dt.timezone(dt.timedelta(hours=9))

# Reason codes returned by the event methods.
DUPLICATE_ORDER = "DUPLICATE_ORDER"
UNKNOWN_ORDER = "UNKNOWN_ORDER"
BAD_QTY = "BAD_QTY"
BAD_PRICE = "BAD_PRICE"
BAD_SIDE = "BAD_SIDE"
NO_UPPER_LIMIT = "NO_UPPER_LIMIT"

_RELEASING_STATUSES = frozenset({"canceled", "rejected", "expired", "filled"})
_TERMINAL_EVENTS = _RELEASING_STATUSES


def kst_date(ts_ns: int) -> dt.date:
    """The Korean calendar date of a UTC nanosecond timestamp."""
    return dt.datetime.fromtimestamp(ts_ns / 1e9, tz=KST).date()


@dataclass(slots=True)
class Position:
    """One code's holding in an agent's book."""

    code: str
    market: str = "KOSPI"
    qty: int = 0
    cost_won: int = 0
    start_qty: int = 0
    start_avg_price: int = 0
    bought_qty: int = 0
    bought_won: int = 0
    sold_qty: int = 0
    sold_won: int = 0
    pending_buy_qty: int = 0
    pending_buy_won: int = 0
    pending_sell_qty: int = 0
    pending_sell_won: int = 0
    realized_pnl_won: int = 0
    fees_won: int = 0
    taxes_won: int = 0

    @property
    def avg_price(self) -> float:
        """Average purchase price (fees excluded); 0 when flat."""
        return self.cost_won / self.qty if self.qty else 0.0

    @property
    def sellable_qty(self) -> int:
        """Shares that may still be offered: holding minus open sells."""
        return self.qty - self.pending_sell_qty


@dataclass(slots=True)
class BookOrder:
    """An order as the book sees it: what is still pending and held for it."""

    client_order_id: str
    code: str
    side: str
    qty: int
    price: int  # 0 = market
    ts_ns: int
    unit_price: int = 0  # the price pending amounts are counted at (upper limit for a market buy)
    filled_qty: int = 0
    hold_won: int = 0
    status: str = "new"
    cancel_requested: bool = False

    @property
    def remaining_qty(self) -> int:
        return self.qty - self.filled_qty

    @property
    def is_open(self) -> bool:
        return self.status not in _RELEASING_STATUSES and self.filled_qty < self.qty


class OrderLike(Protocol):
    """What ``Portfolio.rebuild`` needs of an order (``OrderEvent`` fits)."""

    client_order_id: str
    code: str
    side: str
    qty: int
    price: int
    status: str
    ts_ns: int


class FillLike(Protocol):
    """What ``Portfolio.rebuild`` needs of a fill (``Fill`` fits)."""

    exec_id: str
    client_order_id: str
    code: str
    side: str
    qty: int
    price: int
    fee_won: int
    tax_won: int
    ts_ns: int


@dataclass(slots=True)
class Portfolio:
    """An agent's book, driven by order, fill and price events (time passed in)."""

    allocation_won: int
    costs: CostModel = DEFAULT_COSTS
    markets: Mapping[str, str] = field(default_factory=dict)
    cash_won: int = 0
    cash_on_hold_won: int = 0
    positions: dict[str, Position] = field(default_factory=dict)
    orders: dict[str, BookOrder] = field(default_factory=dict)
    # the orders of ``orders`` still working, oldest first: open-order queries never scan finished orders
    open_by_id: dict[str, BookOrder] = field(default_factory=dict)
    marks: dict[str, int] = field(default_factory=dict)
    upper_limits: dict[str, int] = field(default_factory=dict)
    seen_exec_ids: set[str] = field(default_factory=set)
    fees_won: int = 0
    taxes_won: int = 0
    realized_pnl_won: int = 0
    start_cost_won: int = 0
    adjustments_won: int = 0  # cash booked in (or out) by adjustments, part of the capital
    last_exec_id: str = ""  # the latest execution applied (how far the book has followed the journal)
    adjustments: list[dict[str, Any]] = field(default_factory=list)  # the ledger's adjustments since the opening
    last_ts_ns: int = 0

    def __post_init__(self) -> None:
        self.cash_won = self.allocation_won

    # --- set-up --------------------------------------------------------------

    def position(self, code: str) -> Position:
        """The position of a code, created flat on first use."""
        pos = self.positions.get(code)
        if pos is None:
            pos = Position(code=code, market=self.markets.get(code, "KOSPI"))
            self.positions[code] = pos
        return pos

    def set_start_holding(self, code: str, qty: int, avg_price: int) -> str | None:
        """Book a holding the agent starts with (before any order); None or a reason."""
        if qty < 0:
            return BAD_QTY
        if avg_price < 0 or (qty > 0 and avg_price == 0):
            return BAD_PRICE
        pos = self.position(code)
        self.start_cost_won -= pos.start_qty * pos.start_avg_price
        pos.qty += qty - pos.start_qty
        pos.cost_won += qty * avg_price - pos.start_qty * pos.start_avg_price
        pos.start_qty, pos.start_avg_price = qty, avg_price
        self.start_cost_won += qty * avg_price
        if code not in self.marks and avg_price:
            self.marks[code] = avg_price
        return None

    def load_opening(self, opening: Mapping[str, Any], start_holding: Mapping[str, tuple[int, int]] | None = None) -> None:
        """Start from the ledger's opening of the day (``core.ledger.Book.to_plain``), before any order.

        The opening carries the cash and, per code, the shares, book cost and the
        PnL, fees and taxes realised to date; ``start_holding`` (the roster's)
        is kept only as the capital the agent was given, for its returns.
        """
        self.cash_won = int(opening["cash_won"])
        self.realized_pnl_won = self.fees_won = self.taxes_won = 0
        for code, h in (opening.get("positions") or {}).items():
            pos = self.position(code)
            pos.qty, pos.cost_won = int(h["qty"]), int(h["cost_won"])
            pos.realized_pnl_won, pos.fees_won, pos.taxes_won = (
                int(h.get("realized_pnl_won", 0)), int(h.get("fees_won", 0)), int(h.get("taxes_won", 0)))
            self.realized_pnl_won += pos.realized_pnl_won
            self.fees_won += pos.fees_won
            self.taxes_won += pos.taxes_won
            if pos.qty and code not in self.marks:
                self.marks[code] = round(pos.cost_won / pos.qty)
        self.start_cost_won = 0
        for code, (qty, avg) in (start_holding or {}).items():
            pos = self.position(code)
            pos.start_qty, pos.start_avg_price = qty, avg
            self.start_cost_won += qty * avg

    def on_adjustment(self, code: str, qty: int, cash_won: int, cost_won: int = 0) -> str | None:
        """A journaled change of the book no fill explains (shares and cash in or out); None or a reason."""
        pos = self.position(code)
        if pos.qty + qty < 0 or cost_won < 0:
            return BAD_QTY
        if qty or cost_won:
            book_shares(pos, qty, cost_won)
        self.cash_won += cash_won
        self.adjustments_won += cash_won
        return None

    def set_upper_limit(self, code: str, upper_limit_price: int) -> None:
        """The day's upper limit price, which a market buy holds cash at."""
        self.upper_limits[code] = upper_limit_price

    # --- events --------------------------------------------------------------

    def buy_hold_won(self, code: str, qty: int, price: int) -> int:
        """Cash a buy order of ``qty`` at ``price`` (0 = market) would hold, or -1."""
        unit = price if price > 0 else self.upper_limits.get(code, 0)
        if unit <= 0:
            return -1
        notional = unit * qty
        return notional + self.costs.commission(notional)

    def on_order_placed(self, client_order_id: str, code: str, side: str, qty: int, price: int, ts_ns: int) -> str | None:
        """An order was sent: hold its cash (buy) or its shares (sell). None or a reason."""
        if client_order_id in self.orders:
            return DUPLICATE_ORDER
        if qty <= 0:
            return BAD_QTY
        if price < 0:
            return BAD_PRICE
        if side not in ("buy", "sell"):
            return BAD_SIDE
        order = BookOrder(client_order_id, code, side, qty, price, ts_ns)
        pos = self.positions.get(code) or self.position(code)
        if side == "buy":
            hold = self.buy_hold_won(code, qty, price)
            if hold < 0:
                return NO_UPPER_LIMIT
            order.hold_won = hold
            order.unit_price = price or self.upper_limits[code]
            self.cash_on_hold_won += hold
            pos.pending_buy_qty += qty
            pos.pending_buy_won += qty * order.unit_price
        else:
            order.unit_price = price  # a market sell's amount is unknown until it fills
            pos.pending_sell_qty += qty
            pos.pending_sell_won += qty * order.unit_price
        self.orders[client_order_id] = order
        self.open_by_id[client_order_id] = order
        if ts_ns > self.last_ts_ns:
            self.last_ts_ns = ts_ns
        return None

    def on_cancel_requested(self, client_order_id: str) -> str | None:
        """A cancel was sent for an order; nothing is released until it is confirmed."""
        order = self.orders.get(client_order_id)
        if order is None or not order.is_open:
            return UNKNOWN_ORDER
        order.cancel_requested = True
        return None

    def on_order_event(self, client_order_id: str, status: str, ts_ns: int) -> str | None:
        """An order changed state; cancel, reject and expiry release what it held."""
        order = self.orders.get(client_order_id)
        if order is None:
            return UNKNOWN_ORDER
        if ts_ns > self.last_ts_ns:
            self.last_ts_ns = ts_ns
        if status in _TERMINAL_EVENTS:
            self._release(order, order.qty - order.filled_qty, last=True)
            order.status = status
            self.open_by_id.pop(client_order_id, None)
        elif order.status not in _RELEASING_STATUSES:
            order.status = status
        return None

    def _release(self, order: BookOrder, qty: int, *, last: bool) -> None:
        """Release the pending quantity and the hold for ``qty`` shares of an open order."""
        if order.status in _RELEASING_STATUSES:
            return
        remaining = order.qty - order.filled_qty  # BookOrder.remaining_qty, inlined
        qty = min(qty, remaining)
        pos = self.positions.get(order.code) or self.position(order.code)
        if order.side == "buy":
            freed = order.hold_won if (last or qty >= remaining) else order.hold_won * qty // remaining
            order.hold_won -= freed
            self.cash_on_hold_won -= freed
            pos.pending_buy_qty -= qty
            pos.pending_buy_won -= qty * order.unit_price
        else:
            pos.pending_sell_qty -= qty
            pos.pending_sell_won -= qty * order.unit_price

    def on_fill(
        self,
        exec_id: str,
        client_order_id: str,
        code: str,
        side: str,
        qty: int,
        price: int,
        fee_won: int,
        tax_won: int,
        ts_ns: int,
    ) -> bool:
        """Apply an execution once (by exec id); False if it was already applied or is invalid."""
        if exec_id in self.seen_exec_ids or qty <= 0 or price <= 0 or side not in ("buy", "sell"):
            return False
        self.seen_exec_ids.add(exec_id)
        self.last_exec_id = exec_id
        if ts_ns > self.last_ts_ns:
            self.last_ts_ns = ts_ns
        order = self.orders.get(client_order_id)
        if order is not None:
            self._release(order, qty, last=False)
            order.filled_qty += qty
            if order.filled_qty >= order.qty:
                order.filled_qty = order.qty
                self._release(order, 0, last=True)
                order.status = "filled"
                self.open_by_id.pop(client_order_id, None)
        pos = self.positions.get(code) or self.position(code)
        self.fees_won += fee_won
        self.taxes_won += tax_won
        if side == "buy":
            pos.bought_qty += qty
            pos.bought_won += price * qty
        else:
            pos.sold_qty += qty
            pos.sold_won += price * qty
        cash, pnl = book_trade(pos, side, qty, price, fee_won, tax_won)
        self.cash_won += cash
        self.realized_pnl_won += pnl
        self.marks.setdefault(code, price)
        return True

    def mark(self, code: str, price: int) -> None:
        """The latest price of a code, which values the holding."""
        self.marks[code] = price

    # --- views ---------------------------------------------------------------

    @property
    def cash_available_won(self) -> int:
        return self.cash_won - self.cash_on_hold_won

    def holdings_value_won(self) -> int:
        """Value of all holdings at their last prices."""
        marks = self.marks
        return sum(p.qty * marks.get(c, 0) for c, p in self.positions.items())

    def unrealized_pnl_won(self) -> int:
        """Last price times quantity minus book cost, over all positions."""
        marks = self.marks
        return sum(p.qty * marks.get(c, 0) - p.cost_won for c, p in self.positions.items() if p.qty)

    def equity_won(self) -> int:
        return self.cash_won + self.holdings_value_won()

    def open_orders(self, code: str | None = None) -> list[BookOrder]:
        """Orders still working, oldest first."""
        if code is None:
            return list(self.open_by_id.values())
        return [o for o in self.open_by_id.values() if o.code == code]

    def has_open_orders(self, code: str | None = None) -> bool:
        """Whether any order (of one code, or of any) is still working."""
        if code is None:
            return bool(self.open_by_id)
        return any(o.code == code for o in self.open_by_id.values())

    def forget_finished_orders(self) -> int:
        """Drop finished orders from ``orders`` (at the day roll: client order ids carry the date); returns how many.

        Their fills stay booked and their exec ids stay known, so a repeated
        execution notice is still ignored.
        """
        finished = [coid for coid in self.orders if coid not in self.open_by_id]
        for coid in finished:
            del self.orders[coid]
        return len(finished)

    def cost_rates(self, code: str, ts_ns: int | None = None) -> tuple[float, float]:
        """(commission rate, sell tax rate) for a code on the date of ``ts_ns`` (default: last event)."""
        f = self.costs.commission_num / self.costs.commission_den
        date = kst_date(self.last_ts_ns if ts_ns is None else ts_ns)
        market = self.markets.get(code, "KOSPI")
        return f, tax_rate_ppm(date, market) / TAX_DENOMINATOR

    def bep_rate(self, code: str) -> float:
        """(1 + f) / (1 - f - t): what the price must grow by to break even after costs."""
        f, t = self.cost_rates(code)
        return (1 + f) / (1 - f - t)

    def return_after_costs(self, code: str) -> float:
        """Return of the holding if sold at the last price, after buy and sell costs."""
        pos = self.positions.get(code)
        if pos is None or pos.qty == 0 or pos.cost_won <= 0:
            return 0.0  # flat, or shares at no cost (a stock dividend booked as an adjustment): no return to give
        f, t = self.cost_rates(code)
        return self.marks.get(code, 0) * (1 - f - t) / (pos.avg_price * (1 + f)) - 1

    @property
    def capital_won(self) -> int:
        """What the agent was given: cash allocation, its starting holdings at cost, and cash booked in by adjustments."""
        return self.allocation_won + self.start_cost_won + self.adjustments_won

    def snapshot(self) -> dict[str, Any]:
        """The book as plain data, for status pages and the reconciler."""
        unreal = self.unrealized_pnl_won()
        capital = self.capital_won
        positions = {}
        for code, p in self.positions.items():
            last = self.marks.get(code, 0)
            bep = self.bep_rate(code)
            positions[code] = {
                "qty": p.qty,
                "avg_price": round(p.avg_price, 2),
                "cost_won": p.cost_won,
                "last_price": last,
                "value_won": p.qty * last,
                "start_qty": p.start_qty,
                "start_avg_price": p.start_avg_price,
                "bought_qty": p.bought_qty,
                "bought_avg_price": round(p.bought_won / p.bought_qty, 2) if p.bought_qty else 0.0,
                "sold_qty": p.sold_qty,
                "sold_avg_price": round(p.sold_won / p.sold_qty, 2) if p.sold_qty else 0.0,
                "pending_buy_qty": p.pending_buy_qty,
                "pending_buy_won": p.pending_buy_won,
                "pending_sell_qty": p.pending_sell_qty,
                "pending_sell_won": p.pending_sell_won,
                "realized_pnl_won": p.realized_pnl_won,
                "unrealized_pnl_won": p.qty * last - p.cost_won,
                "fees_won": p.fees_won,
                "taxes_won": p.taxes_won,
                "bep_rate": bep,
                "break_even_price": round(p.avg_price * bep, 2) if p.qty else 0.0,
                "return_after_costs": self.return_after_costs(code),
            }
        return {
            "allocation_won": self.allocation_won,
            "start_cost_won": self.start_cost_won,
            "cash_won": self.cash_won,
            "cash_on_hold_won": self.cash_on_hold_won,
            "cash_available_won": self.cash_available_won,
            "holdings_value_won": self.holdings_value_won(),
            "equity_won": self.equity_won(),
            "realized_pnl_won": self.realized_pnl_won,
            "unrealized_pnl_won": unreal,
            "fees_won": self.fees_won,
            "taxes_won": self.taxes_won,
            "adjustments_won": self.adjustments_won,
            "adjustments": [dict(a) for a in self.adjustments],
            "last_exec_id": self.last_exec_id,
            "return_on_allocation": (self.realized_pnl_won + unreal) / capital if capital else 0.0,
            "open_orders": len(self.open_orders()),
            "positions": positions,
            "ts_ns": self.last_ts_ns,
        }

    # --- recovery ------------------------------------------------------------

    @classmethod
    def rebuild(
        cls,
        allocation_won: int,
        start_holding: Mapping[str, tuple[int, int]],
        orders: Iterable[OrderLike],
        fills: Iterable[FillLike],
        *,
        costs: CostModel = DEFAULT_COSTS,
        markets: Mapping[str, str] | None = None,
        upper_limits: Mapping[str, int] | None = None,
        opening: Mapping[str, Any] | None = None,
        adjustments: Iterable[Mapping[str, Any]] = (),
    ) -> Portfolio:
        """The book from a sync: start values, every order (its latest state) and fills in journal order.

        With the ledger's ``opening`` of the day the book starts from it (and
        ``orders`` / ``fills`` are those since that opening); without one it
        starts from the allocation and ``start_holding``. ``adjustments`` since
        the opening are booked after the fills.

        Orders are placed in time order, fills are applied in the order given
        (the order they were journalled), then terminal states release what is
        left, which gives the same book as applying the events one by one.
        """
        book = cls(allocation_won=allocation_won, costs=costs, markets=dict(markets or {}))
        if opening is not None:
            book.load_opening(opening, start_holding)
        else:
            for code, (qty, avg) in start_holding.items():
                book.set_start_holding(code, qty, avg)
        for code, upper in (upper_limits or {}).items():
            book.set_upper_limit(code, upper)
        order_list = sorted(orders, key=lambda o: o.ts_ns)
        for o in order_list:
            book.on_order_placed(o.client_order_id, o.code, str(o.side), o.qty, o.price, o.ts_ns)
        for f in fills:
            book.on_fill(f.exec_id, f.client_order_id, f.code, str(f.side), f.qty, f.price, f.fee_won, f.tax_won, f.ts_ns)
        for o in order_list:
            book.on_order_event(o.client_order_id, str(o.status), o.ts_ns)
        for a in adjustments:
            if book.on_adjustment(str(a["code"]), int(a["qty"]), int(a["cash_won"]), int(a.get("cost_won", 0))) is None:
                book.adjustments.append(dict(a))
        return book
