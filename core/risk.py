"""Pre-trade risk checks: one decision per order, from the limits (``core.risk_limits``) and the
risk guard's own view (``core.risk_view``).

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

No check walks the open orders: the view keeps running totals over them (see
``core.risk_view``), so a check costs the same with twenty resting orders or
twenty thousand.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from core import krx
from core.instruments import Instrument
from core.risk_limits import (
    PPM,
    AgentLimits,
    AgentOverrides,
    LossLimits,
    OpenOrderLimits,
    OrderLimits,
    PositionLimits,
    RateLimits,
    RiskLimits,
    TradingState,
    load_risk_limits,
    parse_risk_limits,
)
from core.risk_view import AgentBook, OpenOrder, OrderLike, Position, PriceLevels, RiskView

__all__ = [  # the limits and the view live in their own modules; callers import them from here
    "PPM", "AgentLimits", "AgentOverrides", "LossLimits", "OpenOrderLimits", "OrderLimits", "PositionLimits",
    "RateLimits", "RiskLimits", "TradingState", "load_risk_limits", "parse_risk_limits",
    "AgentBook", "OpenOrder", "OrderLike", "Position", "PriceLevels", "RiskView",
    "Reason", "Decision", "APPROVED", "ACCEPTING_SESSIONS", "check_order", "check_cancel",
    "evaluate_loss_limits", "agents_over_loss_limit",
]


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


_SEVERITY = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}
# bound to module names: an enum member's class-attribute look-up costs ~90 ns, twice per order here
_HALTED, _REDUCING = TradingState.HALTED, TradingState.REDUCING

# Sessions that take new orders: krx.Session values and messages.SessionPhase values.
ACCEPTING_SESSIONS = frozenset({"pre_open", "continuous", "closing_auction", "after_hours", "open", "closing"})


# --- the guard's answer ------------------------------------------------------


@dataclass(slots=True)
class Decision:
    """The risk guard's answer: approved, or refused with a reason code and text."""

    approved: bool
    reason_code: str = ""
    text: str = ""


APPROVED = Decision(True)


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
    if c.state is _HALTED:
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
    # position_qty and pending_qty inlined on the agent's book, already at hand: this runs for every sell
    code = c.order.code
    pos = c.book.positions.get(code)
    return (pos.qty if pos is not None else 0) - c.view.pending_by_agent.get((c.order.agent_id, code, "sell"), 0)


def _check_reducing(c: _Ctx) -> Decision | None:
    if c.state is not _REDUCING:
        return None
    if c.side != "sell" or c.order.qty > _sellable(c):
        return _refuse(Reason.TRADING_STATE_REDUCING, "reducing: only sells within holdings are accepted")
    return None


def _check_agent_loss(c: _Ctx) -> Decision | None:
    book, last, base = c.book, c.view.last_prices, c.view.base_prices
    pnl = book.cash_won - book.start_equity_won  # day_pnl_won inlined on the book at hand: this runs for every order
    for code, pos in book.positions.items():
        pnl += pos.qty * (last.get(code) or base.get(code) or pos.avg_price)
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
    pos = c.book.positions.get(code)  # position_qty and pending_qty inlined, as in _sellable
    qty = (pos.qty if pos is not None else 0) + c.view.pending_by_agent.get((agent_id, code, "buy"), 0) + c.order.qty
    if qty > c.agent.max_position_qty:
        return _refuse(Reason.POSITION_EXCEEDS_MAX_PER_AGENT, f"{qty} shares of {code} > {c.agent.max_position_qty}")
    last, base = c.view.last_prices, c.view.base_prices
    held = 0
    for k, p in c.book.positions.items():  # mark_price inlined, no generator: this runs for every buy
        held += p.qty * (last.get(k) or base.get(k) or p.avg_price)
    value = held + c.agent_pending_buy_won() + c.order.qty * c.price
    if value > c.agent.max_position_notional_won:
        return _refuse(Reason.POSITION_EXCEEDS_MAX_PER_AGENT, f"{value:,} won held and bid > {c.agent.max_position_notional_won:,} won")
    return None


def _check_code_position(c: _Ctx) -> Decision | None:
    if c.side != "buy":
        return None
    code = c.order.code
    held = 0
    for b in c.view.agents.values():  # a plain loop, one look-up per agent: this runs for every buy
        pos = b.positions.get(code)
        if pos is not None:
            held += pos.qty
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

