"""The risk guard's own view: agents, positions, open orders, prices, and running totals over them.

No check walks the open orders: ``RiskView`` keeps running totals (shares
working per agent, code and side and per code and side, each agent's working
buys in won, the working price levels per code and side) and moves them by the
change whenever an order is approved, or an order event or fill changes what
remains of it, or it ends (filled, canceled, rejected, expired). A check costs
the same with twenty resting orders or twenty thousand.

Part of the risk checks (``core.risk``), which re-exports these names.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from core import krx
from core.instruments import Instrument
from core.messages import TERMINAL_STATUSES, OrderStatus


class OrderLike(Protocol):
    """What check_order reads from an order (an OrderRequest or a core.orders.Order)."""

    client_order_id: str
    agent_id: str
    code: str
    side: str
    order_type: str
    qty: int
    price: int


@dataclass(slots=True)
class Position:
    """Shares held in one code and their average price in won."""

    qty: int = 0
    avg_price: int = 0


@dataclass(slots=True)
class OpenOrder:
    """An order the guard approved and that is still working."""

    client_order_id: str
    agent_id: str
    code: str
    side: str
    market: bool
    qty: int
    price: int  # limit price; for a market order the price the guard valued it at
    filled_by_fills: int = 0
    filled_by_events: int = 0
    canceled_qty: int = 0
    remaining_qty: int = -1  # kept up to date by refresh(); read on the hot path

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Recompute the shares still working, whichever of fills and order events arrived first.

        The view's running totals follow this only through ``RiskView`` (its
        ``_refresh``): an order in a view is never refreshed directly.
        """
        self.remaining_qty = max(0, self.qty - max(self.filled_by_fills, self.filled_by_events) - self.canceled_qty)


class PriceLevels:
    """The working limit prices on one side of one code, with the best one at hand.

    Counts the open orders with shares still working at each limit price, and
    the market orders apart (they cross anything). The best price (highest bid,
    lowest offer) comes from a heap whose emptied levels are dropped lazily, so
    the self-trade check never walks the open orders.
    """

    __slots__ = ("counts", "market", "_heap", "_sign")

    def __init__(self, side: str) -> None:
        self.counts: dict[int, int] = {}
        self.market = 0
        self._heap: list[int] = []
        self._sign = -1 if side == "buy" else 1  # a min-heap of -price keeps the highest bid on top

    def add(self, market: bool, price: int) -> None:
        """One more working order at this price (or at market)."""
        if market:
            self.market += 1
            return
        n = self.counts.get(price, 0)
        self.counts[price] = n + 1
        if n == 0:
            heapq.heappush(self._heap, self._sign * price)
            if len(self._heap) > 2 * len(self.counts) + 16:  # emptied levels pile up: rebuild
                self._heap = [self._sign * p for p in self.counts]
                heapq.heapify(self._heap)

    def remove(self, market: bool, price: int) -> None:
        """One working order less at this price (or at market)."""
        if market:
            self.market -= 1
            return
        n = self.counts[price] - 1
        if n:
            self.counts[price] = n
        else:
            del self.counts[price]

    def best(self) -> int | None:
        """The best limit price working on this side, or None."""
        heap, counts = self._heap, self.counts
        while heap:
            price = self._sign * heap[0]
            if price in counts:
                return price
            heapq.heappop(heap)
        return None

    def __bool__(self) -> bool:
        return self.market > 0 or bool(self.counts)


@dataclass(slots=True)
class AgentBook:
    """One agent as the risk guard sees it."""

    agent_id: str
    cash_won: int
    start_equity_won: int = 0
    positions: dict[str, Position] = field(default_factory=dict)
    open_orders: dict[str, OpenOrder] = field(default_factory=dict)
    realised_pnl_won: int = 0
    fees_won: int = 0
    taxes_won: int = 0
    order_times: deque[int] = field(default_factory=deque)
    pending_buy_won: int = 0  # sum of remaining_qty x price over the open buys, kept by the view


class RiskView:
    """The risk guard's own view of agents, positions, open orders and prices."""

    def __init__(self, instruments: Mapping[str, Instrument] | None = None) -> None:
        self.agents: dict[str, AgentBook] = {}
        self.last_prices: dict[str, int] = {}
        self.base_prices: dict[str, int] = {}
        self.suspended_codes: set[str] = set()
        self.open_orders: dict[str, OpenOrder] = {}
        self.open_by_code: dict[str, dict[str, OpenOrder]] = {}
        # running totals over the open orders, kept by _add_open / _refresh / _remove_open so
        # that no check walks the open orders: shares working per (agent, code, side) and
        # per (code, side), and the working price levels per (code, side)
        self.pending_by_agent: dict[tuple[str, str, str], int] = {}
        self.pending_by_code: dict[tuple[str, str], int] = {}
        self.levels: dict[tuple[str, str], PriceLevels] = {}
        self.account_order_times: deque[int] = deque()
        self.exec_ids: set[str] = set()
        self._limits_cache: dict[str, tuple[int, tuple[int, int]]] = {}
        for code, inst in (instruments or {}).items():
            self.base_prices[code] = inst.last_close
            self.last_prices[code] = inst.last_close

    # --- set-up ------------------------------------------------------------

    def add_agent(self, agent_id: str, cash_won: int, positions: Mapping[str, tuple[int, int]] | None = None) -> AgentBook:
        """Register an agent with its cash allocation and starting holdings {code: (qty, avg_price)}."""
        book = AgentBook(agent_id, cash_won)
        for code, (qty, avg) in (positions or {}).items():
            book.positions[code] = Position(qty, avg)
        self.agents[agent_id] = book
        book.start_equity_won = self.equity_won(agent_id)
        return book

    def roll_day(self, now_ns: int) -> None:
        """Start a new trading day: last prices become base prices, day PnL restarts."""
        self.base_prices.update(self.last_prices)
        self.exec_ids.clear()
        self.account_order_times.clear()
        for book in self.agents.values():
            book.order_times.clear()
            book.start_equity_won = self.equity_won(book.agent_id)
            book.realised_pnl_won = 0

    # --- updates -----------------------------------------------------------

    def on_price(self, code: str, price: int, now_ns: int) -> None:
        """Record the last trade price of a code."""
        if price > 0:
            self.last_prices[code] = price

    def on_approved(self, order: OrderLike, now_ns: int) -> None:
        """Count an approved order: pending quantities, cash on hold, rate windows."""
        if order.client_order_id in self.open_orders:
            return
        book = self.agents.get(order.agent_id)
        if book is None:
            return
        market = str(order.order_type) == "market"
        price = self.reference_price(order.code, str(order.side), market, order.price)
        self._add_open(OpenOrder(order.client_order_id, order.agent_id, order.code, str(order.side), market,
                                 order.qty, price))
        book.order_times.append(now_ns)
        self.account_order_times.append(now_ns)

    def on_order_event(self, event: Any, now_ns: int) -> None:
        """Follow an order event (status, filled and remaining quantities)."""
        coid = event.client_order_id
        status = event.status
        if type(status) is not OrderStatus:  # the enum call only for plain strings: this runs per order event
            status = OrderStatus(status)
        if status in TERMINAL_STATUSES:
            self._remove_open(coid)
            return
        oo = self.open_orders.get(coid)
        if oo is None:
            if status is OrderStatus.NEW or event.agent_id not in self.agents:
                return  # not approved yet, or not ours to follow
            market = event.price == 0
            price = self.reference_price(event.code, str(event.side), market, event.price)
            oo = OpenOrder(coid, event.agent_id, event.code, str(event.side), market, event.qty, price)
            self._add_open(oo)
        oo.filled_by_events = max(oo.filled_by_events, event.filled_qty)
        oo.canceled_qty = max(oo.canceled_qty, event.qty - event.filled_qty - event.remaining_qty)
        self._refresh(oo)

    def on_fill(self, fill: Any, now_ns: int) -> None:
        """Apply an execution once: position, average price, cash, realised PnL, costs."""
        if fill.exec_id in self.exec_ids:
            return
        book = self.agents.get(fill.agent_id)
        if book is None:
            return
        self.exec_ids.add(fill.exec_id)
        qty, price, fee, tax = fill.qty, fill.price, fill.fee_won, fill.tax_won
        pos = book.positions.setdefault(fill.code, Position())
        notional = qty * price
        if str(fill.side) == "buy":
            total = pos.qty + qty
            if total <= 0:  # a sell applied before this buy (fills out of order): flat, no average
                pos.avg_price = 0
            elif pos.qty <= 0:
                pos.avg_price = price
            else:
                pos.avg_price = (pos.qty * pos.avg_price + notional + total // 2) // total
            pos.qty = total
            book.cash_won -= notional + fee
            book.realised_pnl_won -= fee
        else:
            book.realised_pnl_won += (price - pos.avg_price) * qty - fee - tax
            pos.qty -= qty
            if pos.qty <= 0:
                pos.avg_price = 0
            book.cash_won += notional - fee - tax
        book.fees_won += fee
        book.taxes_won += tax
        oo = self.open_orders.get(fill.client_order_id)
        if oo is not None:
            oo.filled_by_fills += qty
            before = oo.remaining_qty
            oo.refresh()  # _refresh inlined: the order was just found open, so no second look-up
            after = oo.remaining_qty
            if after != before:
                self._count(oo, before, after)
            if after == 0:
                self._remove_open(oo.client_order_id)
        if price > 0:
            self.last_prices.setdefault(fill.code, price)

    # --- figures -----------------------------------------------------------

    def reference_price(self, code: str, side: str, market: bool, price: int) -> int:
        """The price an order is valued at: its limit, or for a market buy the upper limit."""
        if not market and price > 0:
            return price
        last = self.last_prices.get(code) or self.base_prices.get(code, 0)
        if side == "buy":
            upper = self.limit_prices(code)[1]
            if upper > 0:
                return upper
            return krx.limit_prices(last)[1] if last > 0 else 0
        return last

    def limit_prices(self, code: str) -> tuple[int, int]:
        """The (lower, upper) daily limits of a code from its base price ((0, 0) if none is known)."""
        base = self.base_prices.get(code, 0)
        got = self._limits_cache.get(code)
        if got is not None and got[0] == base:
            return got[1]
        limits = krx.limit_prices(base) if base > 0 else (0, 0)
        self._limits_cache[code] = (base, limits)
        return limits

    def mark_price(self, code: str, pos: Position) -> int:
        """The price a holding is valued at: the last trade, else the base, else its cost."""
        return self.last_prices.get(code) or self.base_prices.get(code) or pos.avg_price

    def position_qty(self, agent_id: str, code: str) -> int:
        """Shares an agent holds in a code."""
        book = self.agents.get(agent_id)
        pos = book.positions.get(code) if book is not None else None
        return pos.qty if pos is not None else 0

    def pending_qty(self, agent_id: str, code: str, side: str) -> int:
        """Shares an agent has working on one side of a code."""
        return self.pending_by_agent.get((agent_id, code, side), 0)

    def pending_code_qty(self, code: str, side: str) -> int:
        """Shares the whole firm has working on one side of a code."""
        return self.pending_by_code.get((code, side), 0)

    def pending_buy_won(self, agent_id: str) -> int:
        """Value of an agent's working buys (before the commission reserve)."""
        book = self.agents.get(agent_id)
        return book.pending_buy_won if book is not None else 0

    def equity_won(self, agent_id: str) -> int:
        """An agent's cash plus its holdings at the mark price."""
        book = self.agents[agent_id]
        last, base = self.last_prices, self.base_prices
        value = book.cash_won
        for code, pos in book.positions.items():  # mark_price inlined: this runs for every order and fill
            value += pos.qty * (last.get(code) or base.get(code) or pos.avg_price)
        return value

    def day_pnl_won(self, agent_id: str) -> int:
        """An agent's profit today, realised and unrealised, after costs."""
        return self.equity_won(agent_id) - self.agents[agent_id].start_equity_won

    def account_day_pnl_won(self) -> int:
        """The whole account's profit today."""
        # equity_won inlined in one loop (no generator, no two calls per agent): this runs after every fill
        last, base = self.last_prices, self.base_prices
        total = 0
        for book in self.agents.values():
            value = book.cash_won - book.start_equity_won
            for code, pos in book.positions.items():
                value += pos.qty * (last.get(code) or base.get(code) or pos.avg_price)
            total += value
        return total

    def _add_open(self, oo: OpenOrder) -> None:
        self.open_orders[oo.client_order_id] = oo
        self.agents[oo.agent_id].open_orders[oo.client_order_id] = oo
        self.open_by_code.setdefault(oo.code, {})[oo.client_order_id] = oo
        self._count(oo, 0, oo.remaining_qty)

    def _refresh(self, oo: OpenOrder) -> None:
        """Recompute an open order's working shares and move the running totals by the change."""
        before = oo.remaining_qty
        oo.refresh()
        after = oo.remaining_qty
        if after != before and oo.client_order_id in self.open_orders:
            self._count(oo, before, after)

    def _remove_open(self, client_order_id: str) -> None:
        oo = self.open_orders.pop(client_order_id, None)
        if oo is None:
            return
        book = self.agents.get(oo.agent_id)
        if book is not None:
            book.open_orders.pop(client_order_id, None)
        self.open_by_code.get(oo.code, {}).pop(client_order_id, None)
        self._count(oo, oo.remaining_qty, 0)

    def _count(self, oo: OpenOrder, before: int, after: int) -> None:
        """Move the running totals for an open order whose working shares went from before to after."""
        delta = after - before
        if delta == 0:
            return
        side = oo.side
        code_key = (oo.code, side)
        _move(self.pending_by_agent, (oo.agent_id, oo.code, side), delta)
        _move(self.pending_by_code, code_key, delta)
        if side == "buy":
            book = self.agents.get(oo.agent_id)
            if book is not None:
                book.pending_buy_won += delta * oo.price
        if before == 0 or after == 0:  # the order starts or stops working at its price
            levels = self.levels.get(code_key)
            if levels is None:
                levels = self.levels[code_key] = PriceLevels(side)
            if before == 0:
                levels.add(oo.market, oo.price)
            else:
                levels.remove(oo.market, oo.price)


def _move(totals: dict[Any, int], key: Any, delta: int) -> None:
    """Add ``delta`` to ``totals[key]``; a total back at zero leaves the dict (it stays as small as the open orders)."""
    total = totals.get(key, 0) + delta
    if total:
        totals[key] = total
    else:
        del totals[key]
