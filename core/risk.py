"""Pre-trade risk checks: limits, the risk guard's own view, and one decision per order.

``check_order`` runs each check as its own small function, in this order, and
stops at the first refusal (cheap, stateless checks first):

 1. INVALID_QUANTITY, INVALID_PRICE,  the request itself
    INVALID_SIDE
 2. UNKNOWN_AGENT                     the agent is not in the view
 3. UNKNOWN_CODE                      the code is not in the instrument master
 4. TRADING_STATE_HALTED              no new order while halted
 5. NOT_TRADABLE                      blocked in the config or suspended today
 6. MARKET_CLOSED                     the session does not take orders
 7. BAD_TICK                          a limit price off the tick grid
 8. OUTSIDE_PRICE_LIMITS              beyond +-30% of the base price
 9. FAT_FINGER                        too far from the last price
10. QTY_EXCEEDS_MAX_PER_ORDER
11. NOTIONAL_EXCEEDS_MAX_PER_ORDER
12. TRADING_STATE_REDUCING            only sells within holdings while reducing
13. DAILY_LOSS_LIMIT                  the agent's own loss limit is breached
14. SELF_TRADE                        would cross an open order of the firm in the code
15. INSUFFICIENT_SHARES               no short: holdings minus pending sells
16. INSUFFICIENT_CASH                 allocation minus cash held for pending buys
17. POSITION_EXCEEDS_MAX_PER_AGENT    holdings plus pending buys, shares and won
18. POSITION_EXCEEDS_MAX_PER_CODE     the same firm-wide for the code
19. TOO_MANY_OPEN_ORDERS
20. RATE_LIMIT_EXCEEDED               sliding window, per agent and for the account

Cancels always pass (``check_cancel``). ``RISK_UNAVAILABLE`` is the code the
order manager uses when the guard does not answer (fail closed).

The account's daily loss moves the trading state (``evaluate_loss_limits``);
an agent's daily loss restricts that agent alone (check 13). Everything here is
pure: time is passed in, and the hot path builds no pydantic model.

No check walks the open orders: ``RiskView`` keeps running totals (shares
working per agent, code and side and per code and side, each agent's working
buys in won, the working price levels per code and side) and moves them by the
change whenever an order is approved, or an order event or fill changes what
remains of it, or it ends (filled, canceled, rejected, expired). A check costs
the same with twenty resting orders or twenty thousand.
"""

from __future__ import annotations

import bisect
import heapq
import tomllib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from core import krx
from core.config import ConfigError
from core.instruments import Instrument
from core.messages import TERMINAL_STATUSES, OrderStatus

PPM = 1_000_000


class Reason(StrEnum):
    """Standard reason codes of risk refusals."""

    TRADING_STATE_HALTED = "TRADING_STATE_HALTED"
    TRADING_STATE_REDUCING = "TRADING_STATE_REDUCING"
    UNKNOWN_CODE = "UNKNOWN_CODE"
    NOT_TRADABLE = "NOT_TRADABLE"
    MARKET_CLOSED = "MARKET_CLOSED"
    BAD_TICK = "BAD_TICK"
    OUTSIDE_PRICE_LIMITS = "OUTSIDE_PRICE_LIMITS"
    FAT_FINGER = "FAT_FINGER"
    QTY_EXCEEDS_MAX_PER_ORDER = "QTY_EXCEEDS_MAX_PER_ORDER"
    NOTIONAL_EXCEEDS_MAX_PER_ORDER = "NOTIONAL_EXCEEDS_MAX_PER_ORDER"
    POSITION_EXCEEDS_MAX_PER_AGENT = "POSITION_EXCEEDS_MAX_PER_AGENT"
    POSITION_EXCEEDS_MAX_PER_CODE = "POSITION_EXCEEDS_MAX_PER_CODE"
    INSUFFICIENT_CASH = "INSUFFICIENT_CASH"
    INSUFFICIENT_SHARES = "INSUFFICIENT_SHARES"
    TOO_MANY_OPEN_ORDERS = "TOO_MANY_OPEN_ORDERS"
    RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
    DAILY_LOSS_LIMIT = "DAILY_LOSS_LIMIT"
    SELF_TRADE = "SELF_TRADE"
    UNKNOWN_AGENT = "UNKNOWN_AGENT"
    INVALID_QUANTITY = "INVALID_QUANTITY"
    INVALID_PRICE = "INVALID_PRICE"
    INVALID_SIDE = "INVALID_SIDE"
    RISK_UNAVAILABLE = "RISK_UNAVAILABLE"


class TradingState(StrEnum):
    """What the firm may do: trade, only reduce exposure, or nothing new."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


_SEVERITY = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}

# Sessions that take new orders: krx.Session values and messages.SessionPhase values.
ACCEPTING_SESSIONS = frozenset({"pre_open", "continuous", "closing_auction", "after_hours", "open", "closing"})


# --- limits ------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrderLimits(_Section):
    """Limits on one order."""

    max_qty: int = Field(default=20_000, gt=0)
    max_notional_won: int = Field(default=30_000_000, gt=0)
    fat_finger_pct: float = Field(default=5.0, gt=0, le=100)
    fee_reserve_ppm: int = Field(default=150, ge=0, le=PPM)


class PositionLimits(_Section):
    """Limits on holdings plus pending buys."""

    max_qty_per_agent: int = Field(default=50_000, gt=0)
    max_notional_per_agent_won: int = Field(default=150_000_000, gt=0)
    max_qty_per_code: int = Field(default=200_000, gt=0)


class OpenOrderLimits(_Section):
    max_per_agent: int = Field(default=20, gt=0)


class RateLimits(_Section):
    """New orders per sliding window, per agent and for the whole account."""

    window_s: float = Field(default=1.0, gt=0)
    max_per_agent: int = Field(default=5, gt=0)
    max_account: int = Field(default=15, gt=0)


class LossLimits(_Section):
    """Daily loss limits (realised + unrealised) and the state a breach leads to."""

    daily_loss_limit_agent_won: int = Field(default=5_000_000, gt=0)
    daily_loss_limit_account_won: int = Field(default=30_000_000, gt=0)
    agent_breach_state: TradingState = TradingState.REDUCING
    account_breach_state: TradingState = TradingState.HALTED


class AgentOverrides(_Section):
    """Per-agent replacements of the firm-wide defaults (unset = the default)."""

    max_qty_per_order: int | None = Field(default=None, gt=0)
    max_notional_per_order_won: int | None = Field(default=None, gt=0)
    fat_finger_pct: float | None = Field(default=None, gt=0, le=100)
    max_position_qty: int | None = Field(default=None, gt=0)
    max_position_notional_won: int | None = Field(default=None, gt=0)
    max_open_orders: int | None = Field(default=None, gt=0)
    max_orders_per_window: int | None = Field(default=None, gt=0)
    daily_loss_limit_won: int | None = Field(default=None, gt=0)
    breach_state: TradingState | None = None


@dataclass(frozen=True, slots=True)
class AgentLimits:
    """The limits that apply to one agent, defaults and overrides merged (hot-path form)."""

    max_qty_per_order: int
    max_notional_per_order_won: int
    fat_finger_pct: float
    fee_reserve_ppm: int
    max_position_qty: int
    max_position_notional_won: int
    max_open_orders: int
    max_orders_per_window: int
    daily_loss_limit_won: int
    breach_state: TradingState


class RiskLimits(_Section):
    """Every pre-trade limit, as read from ``configs/risk.toml``."""

    blocked_codes: frozenset[str] = frozenset()
    order: OrderLimits = Field(default_factory=OrderLimits)
    position: PositionLimits = Field(default_factory=PositionLimits)
    open_orders: OpenOrderLimits = Field(default_factory=OpenOrderLimits)
    rate: RateLimits = Field(default_factory=RateLimits)
    loss: LossLimits = Field(default_factory=LossLimits)
    agents: dict[str, AgentOverrides] = Field(default_factory=dict)
    _resolved: dict[str, AgentLimits] = PrivateAttr(default_factory=dict)

    @property
    def window_ns(self) -> int:
        """The rate-limit window in nanoseconds."""
        return int(self.rate.window_s * 1_000_000_000)

    def for_agent(self, agent_id: str) -> AgentLimits:
        """The merged limits of one agent (cached)."""
        # the cache read straight from pydantic's private-attribute store: ``self._resolved`` goes
        # through BaseModel.__getattr__, which costs about ten microseconds per order
        resolved: dict[str, AgentLimits] = self.__pydantic_private__["_resolved"]  # type: ignore[index]
        got = resolved.get(agent_id)
        if got is not None:
            return got
        o = self.agents.get(agent_id) or AgentOverrides()

        def pick(value: Any, default: Any) -> Any:
            return default if value is None else value

        got = AgentLimits(
            max_qty_per_order=pick(o.max_qty_per_order, self.order.max_qty),
            max_notional_per_order_won=pick(o.max_notional_per_order_won, self.order.max_notional_won),
            fat_finger_pct=pick(o.fat_finger_pct, self.order.fat_finger_pct),
            fee_reserve_ppm=self.order.fee_reserve_ppm,
            max_position_qty=pick(o.max_position_qty, self.position.max_qty_per_agent),
            max_position_notional_won=pick(o.max_position_notional_won, self.position.max_notional_per_agent_won),
            max_open_orders=pick(o.max_open_orders, self.open_orders.max_per_agent),
            max_orders_per_window=pick(o.max_orders_per_window, self.rate.max_per_agent),
            daily_loss_limit_won=pick(o.daily_loss_limit_won, self.loss.daily_loss_limit_agent_won),
            breach_state=pick(o.breach_state, self.loss.agent_breach_state),
        )
        resolved[agent_id] = got
        return got


def parse_risk_limits(data: Mapping[str, Any], source: str = "<risk limits>") -> RiskLimits:
    """Validate a mapping into RiskLimits; problems raise ConfigError naming source, key and reason."""
    try:
        return RiskLimits.model_validate(data)
    except ValidationError as exc:
        problems = [(source, ".".join(str(x) for x in err["loc"]) or "-", err["msg"]) for err in exc.errors()]
        raise ConfigError(problems) from exc


def load_risk_limits(path: str | Path) -> RiskLimits:
    """Read ``configs/risk.toml``; a problem raises ConfigError naming file, key and reason."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError([(str(p), "-", "file not found")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(str(p), "-", f"not valid TOML: {exc}")]) from exc
    return parse_risk_limits(data, str(p))


# --- the guard's view --------------------------------------------------------


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
class Decision:
    """The risk guard's answer: approved, or refused with a reason code and text."""

    approved: bool
    reason_code: str = ""
    text: str = ""


APPROVED = Decision(True)


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
            self._refresh(oo)
            if oo.remaining_qty == 0:
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
        return sum(self.day_pnl_won(a) for a in self.agents)

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


# --- the checks --------------------------------------------------------------


@dataclass(slots=True)
class _Ctx:
    """What every check needs, computed once per order."""

    order: OrderLike
    view: RiskView
    limits: RiskLimits
    agent: AgentLimits
    book: AgentBook
    side: str
    market: bool
    price: int  # the reference price
    state: TradingState
    session: str
    instrument: Instrument | None
    now_ns: int
    pending_buy_won: int = -1  # filled in by the first check that needs it

    def agent_pending_buy_won(self) -> int:
        """The agent's working buys in won, computed once per order."""
        if self.pending_buy_won < 0:
            self.pending_buy_won = self.view.pending_buy_won(self.order.agent_id)
        return self.pending_buy_won


def _refuse(reason: Reason, text: str) -> Decision:
    return Decision(False, reason.value, text)


def _reserve(notional_won: int, ppm: int) -> int:
    return notional_won + -(-notional_won * ppm // PPM)


def _check_trading_halted(c: _Ctx) -> Decision | None:
    if c.state is TradingState.HALTED:
        return _refuse(Reason.TRADING_STATE_HALTED, "trading is halted: no new orders")
    return None


def _check_tradable(c: _Ctx) -> Decision | None:
    code = c.order.code
    if code in c.limits.blocked_codes or code in c.view.suspended_codes:
        return _refuse(Reason.NOT_TRADABLE, f"{code} is blocked or suspended")
    return None


def _check_session(c: _Ctx) -> Decision | None:
    if c.session not in ACCEPTING_SESSIONS:
        return _refuse(Reason.MARKET_CLOSED, f"session {c.session!r} does not take orders")
    return None


def _check_tick(c: _Ctx) -> Decision | None:
    if not c.market and not krx.is_on_tick(c.order.price):
        return _refuse(Reason.BAD_TICK, f"price {c.order.price} is not on the tick grid (tick {krx.tick_size(c.order.price)})")
    return None


def _check_price_limits(c: _Ctx) -> Decision | None:
    if c.market:
        return None
    lower, upper = c.view.limit_prices(c.order.code)
    if upper == 0:
        return None
    if not lower <= c.order.price <= upper:
        return _refuse(Reason.OUTSIDE_PRICE_LIMITS, f"price {c.order.price} outside the daily limits {lower}-{upper}")
    return None


def _check_fat_finger(c: _Ctx) -> Decision | None:
    if c.market:
        return None
    last = c.view.last_prices.get(c.order.code) or c.view.base_prices.get(c.order.code, 0)
    if last > 0 and abs(c.order.price - last) * 100 > c.agent.fat_finger_pct * last:
        return _refuse(Reason.FAT_FINGER, f"price {c.order.price} is more than {c.agent.fat_finger_pct}% from the last price {last}")
    return None


def _check_max_qty(c: _Ctx) -> Decision | None:
    if c.order.qty > c.agent.max_qty_per_order:
        return _refuse(Reason.QTY_EXCEEDS_MAX_PER_ORDER, f"{c.order.qty} shares > {c.agent.max_qty_per_order} per order")
    return None


def _check_max_notional(c: _Ctx) -> Decision | None:
    notional = c.order.qty * c.price
    if notional > c.agent.max_notional_per_order_won:
        return _refuse(Reason.NOTIONAL_EXCEEDS_MAX_PER_ORDER,
                       f"{notional:,} won > {c.agent.max_notional_per_order_won:,} won per order")
    return None


def _sellable(c: _Ctx) -> int:
    return c.view.position_qty(c.order.agent_id, c.order.code) - c.view.pending_qty(c.order.agent_id, c.order.code, "sell")


def _check_reducing(c: _Ctx) -> Decision | None:
    if c.state is not TradingState.REDUCING:
        return None
    if c.side != "sell" or c.order.qty > _sellable(c):
        return _refuse(Reason.TRADING_STATE_REDUCING, "reducing: only sells within holdings are accepted")
    return None


def _check_agent_loss(c: _Ctx) -> Decision | None:
    pnl = c.view.day_pnl_won(c.order.agent_id)
    if pnl > -c.agent.daily_loss_limit_won:
        return None
    text = f"day loss {-pnl:,} won reached the agent limit {c.agent.daily_loss_limit_won:,} won"
    if c.agent.breach_state is TradingState.HALTED:
        return _refuse(Reason.DAILY_LOSS_LIMIT, text + ": no new orders")
    if c.side != "sell" or c.order.qty > _sellable(c):
        return _refuse(Reason.DAILY_LOSS_LIMIT, text + ": only sells within holdings")
    return None


def _check_self_trade(c: _Ctx) -> Decision | None:
    # Every agent trades through the one broker account, so crossing any of the
    # firm's own orders (another agent's or the same agent's) is a wash trade.
    # The opposite side's price levels answer whether anything crosses; only a
    # refusal walks the code's open orders, to name the order crossed.
    opposite = c.view.levels.get((c.order.code, "sell" if c.side == "buy" else "buy"))
    if not opposite:
        return None
    if not c.market and opposite.market == 0:
        best = opposite.best()
        if best is None or (c.order.price < best if c.side == "buy" else c.order.price > best):
            return None
    for other in c.view.open_by_code.get(c.order.code, {}).values():
        if other.side == c.side or other.remaining_qty == 0:
            continue
        if c.side == "buy":
            crosses = c.market or other.market or c.order.price >= other.price
        else:
            crosses = c.market or other.market or c.order.price <= other.price
        if crosses:
            return _refuse(Reason.SELF_TRADE, f"would cross {other.client_order_id} of {other.agent_id} ({other.side} @ {other.price})")
    return None


def _check_shares(c: _Ctx) -> Decision | None:
    if c.side != "sell":
        return None
    sellable = _sellable(c)
    if c.order.qty > sellable:
        return _refuse(Reason.INSUFFICIENT_SHARES, f"sell {c.order.qty} > {sellable} held and not already offered")
    return None


def _check_cash(c: _Ctx) -> Decision | None:
    if c.side != "buy":
        return None
    ppm = c.agent.fee_reserve_ppm
    on_hold = _reserve(c.agent_pending_buy_won(), ppm)
    need = _reserve(c.order.qty * c.price, ppm)
    available = c.book.cash_won - on_hold
    if need > available:
        return _refuse(Reason.INSUFFICIENT_CASH, f"need {need:,} won, {available:,} won available")
    return None


def _check_agent_position(c: _Ctx) -> Decision | None:
    if c.side != "buy":
        return None
    agent_id, code = c.order.agent_id, c.order.code
    qty = c.view.position_qty(agent_id, code) + c.view.pending_qty(agent_id, code, "buy") + c.order.qty
    if qty > c.agent.max_position_qty:
        return _refuse(Reason.POSITION_EXCEEDS_MAX_PER_AGENT, f"{qty} shares of {code} > {c.agent.max_position_qty}")
    held = sum(p.qty * c.view.mark_price(k, p) for k, p in c.book.positions.items())
    value = held + c.agent_pending_buy_won() + c.order.qty * c.price
    if value > c.agent.max_position_notional_won:
        return _refuse(Reason.POSITION_EXCEEDS_MAX_PER_AGENT, f"{value:,} won held and bid > {c.agent.max_position_notional_won:,} won")
    return None


def _check_code_position(c: _Ctx) -> Decision | None:
    if c.side != "buy":
        return None
    code = c.order.code
    held = sum(b.positions[code].qty for b in c.view.agents.values() if code in b.positions)
    total = held + c.view.pending_by_code.get((code, "buy"), 0) + c.order.qty
    if total > c.limits.position.max_qty_per_code:
        return _refuse(Reason.POSITION_EXCEEDS_MAX_PER_CODE, f"firm-wide {total} shares of {code} > {c.limits.position.max_qty_per_code}")
    return None


def _check_open_orders(c: _Ctx) -> Decision | None:
    if len(c.book.open_orders) >= c.agent.max_open_orders:
        return _refuse(Reason.TOO_MANY_OPEN_ORDERS, f"{len(c.book.open_orders)} open orders, limit {c.agent.max_open_orders}")
    return None


def _in_window(times: deque[int], now_ns: int, window_ns: int) -> int:
    """How many of the (ascending) order times fall after ``now_ns - window_ns``: a bisection, not a walk."""
    return len(times) - bisect.bisect_right(times, now_ns - window_ns)


def _check_rate(c: _Ctx) -> Decision | None:
    window_ns = c.limits.window_ns
    if _in_window(c.book.order_times, c.now_ns, window_ns) >= c.agent.max_orders_per_window:
        return _refuse(Reason.RATE_LIMIT_EXCEEDED, f"agent sent {c.agent.max_orders_per_window} orders in {c.limits.rate.window_s}s")
    if _in_window(c.view.account_order_times, c.now_ns, window_ns) >= c.limits.rate.max_account:
        return _refuse(Reason.RATE_LIMIT_EXCEEDED, f"account sent {c.limits.rate.max_account} orders in {c.limits.rate.window_s}s")
    return None


CHECKS = (
    _check_trading_halted,
    _check_tradable,
    _check_session,
    _check_tick,
    _check_price_limits,
    _check_fat_finger,
    _check_max_qty,
    _check_max_notional,
    _check_reducing,
    _check_agent_loss,
    _check_self_trade,
    _check_shares,
    _check_cash,
    _check_agent_position,
    _check_code_position,
    _check_open_orders,
    _check_rate,
)
"""The checks after the request, agent and code are known, in the order they run."""


def check_order(
    order: OrderLike,
    view: RiskView,
    limits: RiskLimits,
    state: TradingState,
    session: str,
    instruments: Mapping[str, Instrument],
    now_ns: int,
) -> Decision:
    """Approve or refuse a new order; the first failing check gives the reason.

    An order already approved (same client order id, still open) is approved
    again, so a retried request gets the same answer. On approval the guard
    calls ``view.on_approved(order, now_ns)``.
    """
    qty, price = order.qty, order.price
    if type(qty) is not int or qty <= 0:
        return _refuse(Reason.INVALID_QUANTITY, f"quantity {qty!r} must be a positive whole number of shares")
    market = str(order.order_type) == "market"
    if type(price) is not int or price < 0 or (not market and price == 0):
        return _refuse(Reason.INVALID_PRICE, f"price {price!r} must be whole won (positive for a limit order)")
    side = str(order.side)
    if side not in ("buy", "sell"):
        return _refuse(Reason.INVALID_SIDE, f"side {side!r} is neither buy nor sell")
    book = view.agents.get(order.agent_id)
    if book is None:
        return _refuse(Reason.UNKNOWN_AGENT, f"agent {order.agent_id!r} is not known to the risk guard")
    instrument = instruments.get(order.code)
    if instrument is None:
        return _refuse(Reason.UNKNOWN_CODE, f"code {order.code!r} is not in the instrument master")
    if order.client_order_id in view.open_orders:
        return APPROVED
    ref_price = view.reference_price(order.code, side, market, price)
    if type(state) is not TradingState:
        state = TradingState(state)
    c = _Ctx(order, view, limits, limits.for_agent(order.agent_id), book, side, market, ref_price,
             state, str(session), instrument, now_ns)
    for check in CHECKS:
        decision = check(c)
        if decision is not None:
            return decision
    return APPROVED


def check_cancel(client_order_id: str, view: RiskView, state: TradingState, now_ns: int) -> Decision:
    """Cancels always pass: taking an order off the market never adds risk."""
    return APPROVED


def evaluate_loss_limits(view: RiskView, limits: RiskLimits, state: TradingState, now_ns: int) -> TradingState | None:
    """The state the account must move to after its daily loss breached the limit, or None.

    Only ever tightens the state; going back to ACTIVE is an operator's decision.
    """
    if view.account_day_pnl_won() > -limits.loss.daily_loss_limit_account_won:
        return None
    target = limits.loss.account_breach_state
    return target if _SEVERITY[target] > _SEVERITY[TradingState(state)] else None


def agents_over_loss_limit(view: RiskView, limits: RiskLimits) -> list[str]:
    """Agents whose daily loss reached their own limit (for the guard to report)."""
    return [a for a in view.agents if view.day_pnl_won(a) <= -limits.for_agent(a).daily_loss_limit_won]

