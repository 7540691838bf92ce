"""The agent's context: everything a strategy may see and do, pure and shared by live and back-test.

``AgentContext`` holds the agent's id and codes, its ``Portfolio``, the bar
history per code (plain lists, trimmed to a fixed depth), the latest flows and
fundamentals, the market clock (``now()`` is the time of the last event given
to it, never the wall clock) and an outbox of order intents that the shell
(``agents.runtime`` or the back-tester) drains and sends.

The shell calls the ``on_*`` entry points; each updates the context's state and
then calls the strategy. A strategy's exception is caught, logged and counted;
after ``max_consecutive_errors`` in a row the context stops calling it and
refuses new orders (``halted_by_errors``) and queues an alert record.

Orders a strategy asks for are checked here before they reach the outbox: the
code must be the agent's, the quantity a positive whole number, a limit price
is rounded onto the tick grid for its side (buys up, sells down) and clipped to
the day's limits, a buy must fit in the cash available, and a sell may not
exceed the holding less the shares already offered (no short selling).

The context also knows the agent's limits as the risk guard applies them
(``agents.limits``: the same ``configs/risk.toml``): ``limits()`` tells them,
``max_order_qty`` sizes an order within them, and an order beyond the per-order
quantity, notional or open-order limit is refused here, before it goes out.
A refused order is a signal, not a retry (``agents.refusals``): each refusal is
remembered with a backoff by its reason code, later orders of a shape it
blocks are held back (``BACKING_OFF``), the strategy hears ``on_refused``, and
a storm of one reason queues one alert. ``work`` takes a parent order and
works it as child orders over time (``agents.slicing``), on the bars of its
code; parents end at ``closing``.

Crash-only start-up, the same live and in the back-tester: the shell hands the
context the strategy's saved state (``resume``) and the recorded bars it can
get (``queue_warm_up``) before ``start``. ``start`` then takes the state back
(a state that does not fit is refused with the reason and an alert: the
strategy starts fresh), fills the bar windows from the bars, replays to the
strategy the bars newer than its state with every order refused
(``WARMING_UP``: it catches up on what it missed, it does not trade on the
past), and only then calls ``on_start``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from agents import state_store
from agents.limits import Limits, agent_limits, max_qty_at
from agents.refusals import BACKING_OFF, Refusal, RefusalMemory
from agents.slicing import MAX_CHILD_REFUSALS, ParentOrder, ParentStatus, schedule_problem
from agents.state_store import SavedState
from agents.strategy import BarData, FillData, FlowData, FundData, OrderEventData, StateError, Strategy, TickData
from core import krx
from core.instruments import Instrument
from core.messages import CancelRequest, OrderRequest, OrderType, SessionPhase
from core.portfolio import BookOrder, Portfolio, kst_date
from core.risk import Reason
from core.risk_limits import AgentLimits

_ORDER_TYPE_TEXT = {t: t.value for t in OrderType}  # without the enum ``.value`` property per order

# Reason codes of refused intents.
UNKNOWN_CODE = "UNKNOWN_CODE"
BAD_QTY = "BAD_QTY"
BAD_PRICE = "BAD_PRICE"
NO_PRICE_LIMITS = "NO_PRICE_LIMITS"
INSUFFICIENT_CASH = "INSUFFICIENT_CASH"
INSUFFICIENT_HOLDING = "INSUFFICIENT_HOLDING"
HALTED_BY_ERRORS = "HALTED_BY_ERRORS"
UNKNOWN_ORDER = "UNKNOWN_ORDER"
CANCEL_ALREADY_REQUESTED = "CANCEL_ALREADY_REQUESTED"
WARMING_UP = "WARMING_UP"
BAD_SCHEDULE = "BAD_SCHEDULE"
UNKNOWN_PARENT = "UNKNOWN_PARENT"
# the risk guard's own codes for the limits the context checks first
QTY_EXCEEDS_MAX_PER_ORDER = Reason.QTY_EXCEEDS_MAX_PER_ORDER.value
NOTIONAL_EXCEEDS_MAX_PER_ORDER = Reason.NOTIONAL_EXCEEDS_MAX_PER_ORDER.value
TOO_MANY_OPEN_ORDERS = Reason.TOO_MANY_OPEN_ORDERS.value
# refusals of the context's own that count as refusals heard (the others are bad input)
_LIMIT_REASONS = frozenset({QTY_EXCEEDS_MAX_PER_ORDER, NOTIONAL_EXCEEDS_MAX_PER_ORDER, TOO_MANY_OPEN_ORDERS,
                            INSUFFICIENT_CASH, INSUFFICIENT_HOLDING})

HISTORY_BARS = 1024  # bars kept per code (``ctx.bars`` sees at most this many)


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """A new order the strategy wants sent; the shell turns it into an ``OrderRequest``."""

    ok: ClassVar[bool] = True
    client_order_id: str
    agent_id: str
    code: str
    side: str
    order_type: str
    qty: int
    price: int  # 0 for a market order
    ts_ns: int

    def to_request(self) -> OrderRequest:
        """The bus message for this intent."""
        return OrderRequest(
            client_order_id=self.client_order_id,
            agent_id=self.agent_id,
            code=self.code,
            side=self.side,
            order_type=self.order_type,
            qty=self.qty,
            price=self.price,
            ts_ns=self.ts_ns,
        )


@dataclass(frozen=True, slots=True)
class CancelIntent:
    """A cancel of one of the agent's open orders (all that remains)."""

    ok: ClassVar[bool] = True
    client_order_id: str
    agent_id: str
    ts_ns: int

    def to_request(self) -> CancelRequest:
        """The bus message for this intent."""
        return CancelRequest(client_order_id=self.client_order_id, agent_id=self.agent_id, ts_ns=self.ts_ns)


@dataclass(frozen=True, slots=True)
class Refused:
    """An order or cancel the context refused, with a reason code and text."""

    ok: ClassVar[bool] = False
    reason_code: str
    text: str


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """Something a person should know about; the runtime publishes it as an ``Alert``."""

    level: str
    kind: str
    text: str
    ts_ns: int


class BarWindow(NamedTuple):
    """The last bars of a code as int64 arrays, oldest first."""

    ts_ns: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


def _is_qty(qty: Any) -> bool:
    """A positive whole number of shares (not a bool)."""
    return not isinstance(qty, bool) and isinstance(qty, (int, np.integer)) and qty > 0


def _is_price(price: Any) -> bool:
    """A positive finite number (not a bool)."""
    return (not isinstance(price, bool) and isinstance(price, (int, float, np.integer, np.floating))
            and math.isfinite(price) and price > 0)


_EMPTY = np.zeros(0, dtype=np.int64)
_EMPTY_WINDOW = BarWindow(_EMPTY, _EMPTY, _EMPTY, _EMPTY, _EMPTY, _EMPTY)


class AgentContext:
    """A strategy's window on the market and its book; the same in live trading and back-tests."""

    def __init__(
        self,
        agent_id: str,
        codes: Iterable[str],
        strategy: Strategy,
        portfolio: Portfolio,
        instruments: Mapping[str, Instrument] | None = None,
        *,
        history: int = HISTORY_BARS,
        max_consecutive_errors: int = 5,
        order_seq: int = 0,
        order_seq_date: str = "",
        log_depth: int = 500,
        limits: AgentLimits | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.agent_limits: AgentLimits = limits if limits is not None else agent_limits(agent_id)
        self.refusals = RefusalMemory(agent_id)
        self._parents: dict[str, ParentOrder] = {}
        self._child_parent: dict[str, ParentOrder] = {}  # child client order id -> its parent
        self._parent_seq = 0
        self.codes: tuple[str, ...] = tuple(codes)
        self.strategy = strategy
        self.portfolio = portfolio
        self._instruments: dict[str, Instrument] = {c: instruments[c] for c in self.codes if instruments and c in instruments}
        self._history = max(1, history)
        self._trim_at = 2 * self._history
        self._bars: dict[str, list[BarData]] = {c: [] for c in self.codes}
        self._flows: dict[str, list[FlowData]] = {c: [] for c in self.codes}
        self._marks = portfolio.marks
        self._limits: dict[str, tuple[int, int]] = {}
        # one list for the context's life (drained by copy and clear), so a shell may keep a reference
        # and test it for pending intents without a call per event
        self._outbox: list[OrderIntent | CancelIntent] = []
        self.outbox = self._outbox
        self._alerts: list[AlertRecord] = []
        self._logs: deque[tuple[int, str]] = deque(maxlen=log_depth)
        self._now = 0
        self._market_ns = 0  # the market's time: bars, ticks, flows, sessions and timers move it, order events never
        self.phase: SessionPhase | None = None
        self.trading_date = order_seq_date
        self._order_seq = order_seq
        self._order_seq_date = order_seq_date
        self.max_consecutive_errors = max_consecutive_errors
        self.consecutive_errors = 0
        self.errors_total = 0
        self.last_error = ""
        self.halted_by_errors = False
        self.ignored_events = 0
        self._fundamentals: dict[str, FundData] = {
            c: FundData(c, 0, "", inst.eps, inst.bps, inst.dividend, "master") for c, inst in self._instruments.items()
        }
        for code, inst in self._instruments.items():
            self.set_base_price(code, inst.last_close)
        self._bind(strategy)
        self._saved: SavedState | None = None  # handed in by ``resume``, taken back by ``start``
        self._refused = ""
        self._warm_up: list[BarData] = []
        self._warming = False
        self.warmed_through: dict[str, int] = {}  # per code: the newest bar the warm-up gave (a later copy is not new)
        self.resumed: dict[str, Any] = {"restored": False, "reason": "not started"}

    def _bind(self, strategy: Strategy) -> None:
        self.strategy = strategy
        # Bound once: the per-bar path stays short. A fill or order-event hook the strategy does not
        # override is the base class's no-op: it is not called.
        self._strategy_on_bar = strategy.on_bar
        self._strategy_on_fill = None if type(strategy).on_fill is Strategy.on_fill else strategy.on_fill
        self._strategy_on_order_event = (
            None if type(strategy).on_order_event is Strategy.on_order_event else strategy.on_order_event
        )
        self._strategy_on_refused = None if type(strategy).on_refused is Strategy.on_refused else strategy.on_refused

    # --- clock, prices, data ------------------------------------------------------

    def now(self) -> int:
        """Market time: the time stamp (ns, UTC) of the last event given to the context."""
        return self._now

    def last_price(self, code: str) -> int:
        """The last traded price of a code (0 before any)."""
        return self._marks.get(code, 0)

    def bars(self, code: str, n: int) -> BarWindow:
        """The last ``n`` bars of a code (fewer early in the day) as numpy arrays."""
        rows = self._bars.get(code)
        if not rows or n <= 0:
            return _EMPTY_WINDOW
        cols = np.array([r[1:] for r in rows[-n:]], dtype=np.int64)
        return BarWindow(cols[:, 0], cols[:, 1], cols[:, 2], cols[:, 3], cols[:, 4], cols[:, 5])

    def bar_count(self, code: str) -> int:
        """How many bars of a code the context currently keeps."""
        return len(self._bars.get(code, ()))

    def flows(self, code: str, n: int) -> list[FlowData]:
        """The last ``n`` investor-flow records of a code, oldest first."""
        rows = self._flows.get(code)
        return rows[-n:] if rows and n > 0 else []

    def instrument(self, code: str) -> Instrument | None:
        """The instrument master's record of a code (name, market, shares outstanding, KOSPI 200)."""
        return self._instruments.get(code)

    def fundamentals(self, code: str) -> FundData | None:
        """A code's EPS, BPS and DPS in force: the latest announcement heard, else the instrument master's."""
        return self._fundamentals.get(code)

    def set_fundamentals(self, fund: FundData) -> None:
        """A code's figures in force, taken quietly (a late joiner's snapshot, before the strategy hears anything)."""
        if fund.code in self._bars:
            self._fundamentals[fund.code] = fund

    def on_fundamentals(self, fund: FundData) -> None:
        """An announcement (``md.fund``): in force at once; the strategy's ``on_fundamentals`` if it changed anything."""
        if fund.code not in self._bars:
            self.ignored_events += 1
            return
        old = self._fundamentals.get(fund.code)
        if old is not None and old.source != "master" and fund.effective_date < old.effective_date:
            return  # an older announcement repeated after a newer one
        self._fundamentals[fund.code] = fund
        if old is not None and (old.eps, old.bps, old.dps) == (fund.eps, fund.bps, fund.dps):
            return  # the same figures: a repeat (the venue repeats them for late joiners) or the master's confirmed
        self._call("on_fundamentals", self.strategy.on_fundamentals, fund)

    def set_base_price(self, code: str, base_price: int) -> None:
        """The day's base price (previous close), which fixes the daily limit prices."""
        if base_price <= 0:
            return
        lower, upper = krx.limit_prices(base_price)
        self._limits[code] = (lower, upper)
        self.portfolio.set_upper_limit(code, upper)

    def price_limits(self, code: str) -> tuple[int, int] | None:
        """The day's (lower, upper) limit prices of a code, if known."""
        return self._limits.get(code)

    def log(self, msg: str) -> None:
        """Write a line to the agent's log, stamped with market time."""
        self._logs.append((self._now, msg))

    # --- the book ---------------------------------------------------------------

    def position(self, code: str) -> int:
        """Shares held of a code."""
        pos = self.portfolio.positions.get(code)
        return pos.qty if pos is not None else 0

    def sellable(self, code: str) -> int:
        """Shares of a code that may still be offered (holding minus open sells)."""
        pos = self.portfolio.positions.get(code)
        return pos.sellable_qty if pos is not None else 0

    def avg_price(self, code: str) -> float:
        """Average purchase price of the holding (fees excluded; 0 when flat)."""
        pos = self.portfolio.positions.get(code)
        return pos.avg_price if pos is not None else 0.0

    def cash(self) -> int:
        """Cash available in won: cash less what open buy orders hold."""
        return self.portfolio.cash_available_won

    def equity(self) -> int:
        """Cash plus holdings at their last prices, in won."""
        return self.portfolio.equity_won()

    def open_orders(self, code: str | None = None) -> list[BookOrder]:
        """The agent's working orders (all codes, or one)."""
        return self.portfolio.open_orders(code)

    def has_open_orders(self, code: str | None = None) -> bool:
        """Whether the agent has a working order (of one code, or of any): ``open_orders`` without the list."""
        return self.portfolio.has_open_orders(code)

    def cost_rates(self, code: str) -> tuple[float, float]:
        """(commission rate, sell tax rate) for a code today."""
        return self.portfolio.cost_rates(code, self._now)

    def affordable_qty(self, code: str, price: float | int, budget_won: int | None = None) -> int:
        """Shares of a limit buy at ``price`` that the budget (default: all cash available) pays for, commission included."""
        budget = self.cash() if budget_won is None else min(int(budget_won), self.cash())
        if price <= 0 or budget <= 0:
            return 0
        px = krx.round_for_side(price, "buy")
        book = self.portfolio
        qty = int(budget // (px * (1 + self.cost_rates(code)[0])))
        while qty > 0 and book.buy_hold_won(code, qty, px) > budget:
            qty -= 1
        return qty

    def return_after_costs(self, code: str) -> float:
        """Return of the holding if sold at the last price, after buy and sell costs."""
        return self.portfolio.return_after_costs(code)

    # --- limits -----------------------------------------------------------------

    def limits(self) -> Limits:
        """The agent's limits as the risk guard applies them, with its open orders, cash and sellable shares now."""
        lim = self.agent_limits
        return Limits(lim.max_qty_per_order, lim.max_notional_per_order_won, lim.max_open_orders,
                      len(self.portfolio.open_by_id), self.cash(), {c: self.sellable(c) for c in self.codes},
                      lim.max_position_qty, lim.max_position_notional_won)

    def max_order_qty(self, code: str, side: str, price: float | int | None = None) -> int:
        """The most shares one order of ``side`` at ``price`` (None: market) may have: per-order limits, cash or shares."""
        if side == "sell":
            return min(self.sellable(code), max_qty_at(self.agent_limits, self._unit_price(code, side, price)))
        unit = self._unit_price(code, side, price)
        if unit <= 0:
            return 0
        return min(self.affordable_qty(code, unit), max_qty_at(self.agent_limits, unit))

    def _unit_price(self, code: str, side: str, price: float | int | None) -> int:
        """What the risk guard values one share of the order at: its limit, a market buy at the upper limit."""
        limits = self._limits.get(code)
        if price is None:
            if side == "buy":
                return limits[1] if limits is not None else 0
            return self._marks.get(code, 0)
        px = krx.round_for_side(price, side)
        return min(max(px, limits[0]), limits[1]) if limits is not None else px

    # --- acting -----------------------------------------------------------------

    def buy(self, code: str, qty: int, price: float | int | None = None) -> OrderIntent | Refused:
        """Ask to buy ``qty`` shares at a limit ``price`` (rounded up to the grid), or at market if None."""
        return self._order(code, "buy", qty, price)

    def sell(self, code: str, qty: int, price: float | int | None = None) -> OrderIntent | Refused:
        """Ask to sell ``qty`` shares at a limit ``price`` (rounded down to the grid), or at market if None."""
        return self._order(code, "sell", qty, price)

    def cancel(self, client_order_id: str) -> CancelIntent | Refused:
        """Ask to cancel what remains of an open order."""
        if self._warming:
            return Refused(WARMING_UP, "catching up on recorded bars: no cancel")
        order = self.portfolio.orders.get(client_order_id)
        if order is None or not order.is_open:
            return Refused(UNKNOWN_ORDER, f"no open order {client_order_id}")
        if order.cancel_requested:
            return Refused(CANCEL_ALREADY_REQUESTED, f"cancel of {client_order_id} already sent")
        self.portfolio.on_cancel_requested(client_order_id)
        intent = CancelIntent(client_order_id, self.agent_id, self._now)
        self._outbox.append(intent)
        return intent

    def cancel_all(self, code: str | None = None) -> list[CancelIntent]:
        """Cancel every open order (of one code, or all) not already being cancelled."""
        out = []
        for order in self.portfolio.open_orders(code):
            if not order.cancel_requested:
                intent = self.cancel(order.client_order_id)
                if isinstance(intent, CancelIntent):
                    out.append(intent)
        return out

    def _cannot_trade(self, code: str) -> Refused | None:
        """Why no order of ``code`` may be made now (warming up, stopped by errors, not its code), or None."""
        if self._warming:
            return Refused(WARMING_UP, "catching up on recorded bars: no order")
        if self.halted_by_errors:
            return Refused(HALTED_BY_ERRORS, f"{self.agent_id} stopped trading after {self.consecutive_errors} strategy errors")
        if code not in self._bars:
            return Refused(UNKNOWN_CODE, f"{code!r} is not one of this agent's codes {self.codes}")
        return None

    def _order(self, code: str, side: str, qty: Any, price: float | int | None) -> OrderIntent | Refused:
        cannot = self._cannot_trade(code)
        if cannot is not None:
            return cannot
        if not _is_qty(qty):
            return Refused(BAD_QTY, f"quantity must be a positive whole number of shares, not {qty!r}")
        qty = int(qty)
        limits = self._limits.get(code)
        if price is None:
            if limits is None:
                return Refused(NO_PRICE_LIMITS, f"no limit prices known for {code}; a market order cannot be sized")
            order_type, px = OrderType.MARKET, 0
        else:
            if not _is_price(price):
                return Refused(BAD_PRICE, f"limit price must be a positive number, not {price!r}")
            px = krx.round_for_side(price, side)
            if limits is not None:
                px = min(max(px, limits[0]), limits[1])
            order_type = OrderType.LIMIT
        book = self.portfolio
        lim = self.agent_limits
        if qty > lim.max_qty_per_order:
            return self._refuse_own(code, side, qty, px, QTY_EXCEEDS_MAX_PER_ORDER, f"{qty} shares > {lim.max_qty_per_order} per order")
        unit = px or (limits[1] if side == "buy" and limits is not None else self._marks.get(code, 0))
        if qty * unit > lim.max_notional_per_order_won:
            return self._refuse_own(code, side, qty, px, NOTIONAL_EXCEEDS_MAX_PER_ORDER,
                                    f"{qty * unit:,} won > {lim.max_notional_per_order_won:,} won per order")
        if len(book.open_by_id) >= lim.max_open_orders:
            return self._refuse_own(code, side, qty, px, TOO_MANY_OPEN_ORDERS,
                                    f"{len(book.open_by_id)} open orders, limit {lim.max_open_orders}")
        if side == "buy":
            hold = book.buy_hold_won(code, qty, px)
            if hold > book.cash_available_won:
                return self._refuse_own(code, side, qty, px, INSUFFICIENT_CASH,
                                        f"buy {qty} {code} needs {hold} won, {book.cash_available_won} available")
        else:
            sellable = self.sellable(code)
            if qty > sellable:
                return self._refuse_own(code, side, qty, px, INSUFFICIENT_HOLDING,
                                        f"sell {qty} {code} exceeds the {sellable} shares that may be offered")
        block = self.refusals.holds(code, side, qty, px, self._market_ns)
        if block is not None:
            return Refused(BACKING_OFF, f"held back: a like order was refused {block.reason_code} ({block.repeats + 1}x)")
        intent = OrderIntent(self._next_client_order_id(), self.agent_id, code, side, _ORDER_TYPE_TEXT[order_type], qty, px, self._now)
        book.on_order_placed(intent.client_order_id, code, side, qty, px, self._now)
        self._outbox.append(intent)
        return intent

    def _refuse_own(self, code: str, side: str, qty: int, price: int, reason_code: str, text: str) -> Refused:
        """A refusal of the context's own by a limit: counted with the refusals heard, then returned."""
        self._heard(Refusal("", code, side, qty, price, reason_code, text, self._now, sent=False))
        return Refused(reason_code, text)

    def _heard(self, refusal: Refusal) -> None:
        # backoffs run on the market's clock: an order event's stamp may be the back office's wall clock
        storm = self.refusals.record(refusal, self._market_ns)
        if storm is not None:
            self._alerts.append(AlertRecord("warning", "refusal_storm", storm, self._now))

    # --- sliced execution ---------------------------------------------------------

    def work(self, code: str, side: str, qty: int, *, twap_minutes: int | None = None, participation: float | None = None,
             limit_price: float | int | None = None) -> ParentOrder | Refused:
        """Work a parent order as child orders: TWAP over ``twap_minutes``, or ``participation`` of traded volume.

        Children are limit orders at the last price (never beyond ``limit_price``),
        each within the per-order limits; see ``agents.slicing``.
        """
        cannot = self._cannot_trade(code)
        if cannot is not None:
            return cannot
        if side not in ("buy", "sell"):
            return Refused(BAD_QTY, f"side must be buy or sell, not {side!r}")
        if not _is_qty(qty):
            return Refused(BAD_QTY, f"quantity must be a positive whole number of shares, not {qty!r}")
        problem = schedule_problem(twap_minutes, participation)
        if problem:
            return Refused(BAD_SCHEDULE, problem)
        limit = 0
        if limit_price is not None:
            if not _is_price(limit_price):
                return Refused(BAD_PRICE, f"limit price must be a positive number, not {limit_price!r}")
            limit = krx.round_for_side(limit_price, side)
        qty = int(qty)
        pending = sum(p.remaining_qty for p in self._parents.values() if p.is_working and p.code == code and p.side == side)
        if side == "sell":
            if qty + pending > self.sellable(code):
                return Refused(INSUFFICIENT_HOLDING, f"sell {qty} {code}: {self.sellable(code)} shares may be offered, "
                                                     f"{pending} already being worked")
        else:
            px = limit or self.last_price(code)
            if px <= 0:
                return Refused(BAD_PRICE, f"no price known for {code}: give a limit price")
            hold = self.portfolio.buy_hold_won(code, qty + pending, px)
            if hold > self.cash():
                return Refused(INSUFFICIENT_CASH, f"buy {qty} {code} (and {pending} being worked) needs about {hold} won, "
                                                  f"{self.cash()} available")
        self._parent_seq += 1
        date = self.trading_date or kst_date(self._now).strftime("%Y%m%d")
        parent = ParentOrder(f"{self.agent_id}-{date}-P{self._parent_seq}", code, side, qty, self._now, limit,
                             twap_minutes or 0, float(participation or 0.0))
        self._parents[parent.parent_id] = parent
        self.log(f"work {parent.parent_id}: {side} {qty} {code}, {parent.as_dict()['schedule']}")
        self._work(parent)
        return parent

    def trade(self, code: str, side: str, qty: int, price: float | int | None = None, *,
              twap_minutes: int = 5) -> OrderIntent | ParentOrder | Refused:
        """One order if it fits the per-order limits, else the same worked as TWAP children over ``twap_minutes``.

        A worked order is limited to ``price`` (children at the last price, never beyond it).
        """
        if _is_qty(qty) and (price is None or _is_price(price)) \
                and qty > max_qty_at(self.agent_limits, self._unit_price(code, side, price)):
            return self.work(code, side, int(qty), twap_minutes=twap_minutes, limit_price=price)
        return self._order(code, side, qty, price)

    def cancel_work(self, parent_id: str) -> bool:
        """Stop working a parent order and cancel its working child; False if it is not working."""
        parent = self._parents.get(parent_id)
        if parent is None or not parent.is_working:
            return False
        parent.end(ParentStatus.CANCELED, "cancelled by the strategy")
        self._cancel_child(parent)
        return True

    def working(self, code: str | None = None) -> list[ParentOrder]:
        """The parent orders being worked (all codes, or one)."""
        return [p for p in self._parents.values() if p.is_working and (code is None or p.code == code)]

    def parent(self, parent_id: str) -> ParentOrder | None:
        """A parent order of today, working or ended."""
        return self._parents.get(parent_id)

    def _cancel_child(self, parent: ParentOrder) -> None:
        order = self.portfolio.orders.get(parent.child_id) if parent.child_id else None
        if order is not None and order.is_open and not order.cancel_requested:
            self.cancel(parent.child_id)

    def _work(self, parent: ParentOrder) -> None:
        """Send the child a parent's schedule asks for now, or roll a child left open into the next slice."""
        if not parent.is_working:
            return
        if parent.child_id:
            child = self.portfolio.orders.get(parent.child_id)
            if child is not None and child.is_open:
                if child.ts_ns < self._now and not child.cancel_requested:
                    self.cancel(parent.child_id)  # its slice is over: what it left goes with the next
                return
            parent.child_id = ""
        want = parent.target_qty(self._now) - parent.filled_qty
        if want <= 0:
            return
        price = parent.child_price(self.last_price(parent.code))
        if price <= 0 or len(self.portfolio.open_by_id) >= self.agent_limits.max_open_orders:
            return
        qty = min(want, self.max_order_qty(parent.code, parent.side, price))
        if qty <= 0:
            return
        got = self._order(parent.code, parent.side, qty, price)
        if isinstance(got, OrderIntent):
            parent.child_id = got.client_order_id
            parent.children.append(got.client_order_id)
            self._child_parent[got.client_order_id] = parent

    def _end_parents(self, status: ParentStatus, reason: str) -> None:
        for parent in self._parents.values():
            if parent.is_working:
                parent.end(status, reason)
                self.log(f"{parent.parent_id} {status.value} ({reason}): {parent.filled_qty} of {parent.qty} done")

    def _next_client_order_id(self) -> str:
        date = self.trading_date or kst_date(self._now).strftime("%Y%m%d")
        if date != self._order_seq_date:
            self._order_seq_date, self._order_seq = date, 0
        self._order_seq += 1
        return f"{self.agent_id}-{date}-{self._order_seq}"

    def order_seq(self) -> tuple[str, int]:
        """The trading date of the last client order id made and its number."""
        return self._order_seq_date, self._order_seq

    def resume_order_seq(self, trading_date: str, last_n: int) -> None:
        """Continue client order numbers after a restart from the last ``n`` the sync returned."""
        if trading_date == self._order_seq_date:
            self._order_seq = max(self._order_seq, last_n)
        else:
            self._order_seq_date, self._order_seq = trading_date, last_n

    # --- for the shell ----------------------------------------------------------

    def drain_outbox(self) -> list[OrderIntent | CancelIntent]:
        """The intents queued since the last call, in the order they were made."""
        outbox = self._outbox
        if not outbox:
            return []
        out = outbox.copy()
        outbox.clear()
        return out

    def drain_alerts(self) -> list[AlertRecord]:
        """Alert records queued since the last call."""
        out, self._alerts = self._alerts, []
        return out

    def drain_logs(self) -> list[tuple[int, str]]:
        """Log lines (market time, text) written since the last call."""
        out = list(self._logs)
        self._logs.clear()
        return out

    def status(self) -> dict[str, Any]:
        """The agent's state as plain data for its status page."""
        return {
            "agent_id": self.agent_id,
            "codes": list(self.codes),
            "strategy": self.strategy.name,
            "now_ns": self._now,
            "phase": self.phase.value if self.phase else "",
            "halted_by_errors": self.halted_by_errors,
            "errors_total": self.errors_total,
            "consecutive_errors": self.consecutive_errors,
            "last_error": self.last_error,
            "book": self.portfolio.snapshot(),
            "strategy_state": self.strategy.state(),
            "resumed": dict(self.resumed),
            "limits": self.limits()._asdict(),
            "refusals": self.refusals.status(),
            "working": [p.as_dict() for p in self._parents.values()],
        }

    def _failed(self, where: str, exc: Exception) -> None:
        self.errors_total += 1
        self.consecutive_errors += 1
        self.last_error = f"{where}: {type(exc).__name__}: {exc}"
        self.log(f"strategy error in {self.last_error}")
        if self.consecutive_errors >= self.max_consecutive_errors and not self.halted_by_errors:
            self.halted_by_errors = True
            self._alerts.append(
                AlertRecord(
                    "critical",
                    "strategy_halted",
                    f"{self.agent_id}: {self.consecutive_errors} strategy errors in a row, trading stopped; last {self.last_error}",
                    self._now,
                )
            )

    # --- entry points (the shell calls these) -----------------------------------

    def load_book(self, portfolio: Portfolio) -> None:
        """Replace the book with one rebuilt from a sync (``Portfolio.rebuild``), keeping today's limits."""
        self.portfolio = portfolio
        self._marks = portfolio.marks
        for code, (_, upper) in self._limits.items():
            portfolio.set_upper_limit(code, upper)

    def start(self) -> None:
        """Hand control to the strategy once the book is rebuilt: resume its state, warm up, then ``on_start``."""
        self._resume()
        self._call("on_start", lambda ctx, _: self.strategy.on_start(ctx), None)

    # --- saved state and warm-up ---------------------------------------------------

    def save_state(self) -> SavedState:
        """The strategy's state with what identifies it, how far it had seen each code, and the recent flows."""
        strategy = self.strategy
        return SavedState(
            strategy=strategy.name,
            version=strategy.state_version,
            params_hash=state_store.params_hash(strategy.params),
            trading_date=self.trading_date,
            saved_ns=self._now,
            through_ns={code: rows[-1].ts_ns for code, rows in self._bars.items() if rows},
            flows={code: [tuple(f[1:6]) for f in rows[-self._history:]] for code, rows in self._flows.items() if rows},  # type: ignore[misc]
            state=strategy.save_state(),
            parents=[p.to_plain() for p in self._parents.values() if p.is_working],
        )

    def resume(self, saved: SavedState | None, refused: str = "") -> None:
        """The saved state ``start`` gives back to the strategy (None: start fresh; ``refused``: why a file was unusable)."""
        self._saved, self._refused = saved, refused

    def queue_warm_up(self, bars: Iterable[BarData]) -> None:
        """Recorded bars for ``start`` to warm the windows with (any order; repeats are dropped)."""
        self._warm_up.extend(bars)
        limit = 2 * self._history * len(self.codes)
        if len(self._warm_up) > 2 * limit:
            del self._warm_up[:-limit]

    def _resume(self) -> None:
        saved, reason = self._saved, self._refused
        self._saved, self._refused = None, ""
        if saved is not None:
            reason = state_store.mismatch(saved, self.strategy) or self._load(saved)
        through: Mapping[str, int] | None = None  # None: a fresh strategy, whose past bars only fill the windows
        if saved is not None and not reason:
            through = saved.through_ns
            self.resumed = {"restored": True, "reason": "", "trading_date": saved.trading_date, "saved_ns": saved.saved_ns}
            self.log(f"strategy state of {saved.trading_date or '-'} restored")
        elif reason:
            self.resumed = {"restored": False, "reason": reason, "refused": True}
            self.log(f"saved strategy state refused: {reason}; starting fresh")
            self._alerts.append(AlertRecord("warning", "strategy_state_refused",
                                            f"{self.agent_id}: saved strategy state refused ({reason}); the strategy starts fresh", self._now))
        else:
            self.resumed = {"restored": False, "reason": "no saved state"}
        warmed, replayed = self._warm(through)
        self.resumed.update(warm_up_bars=warmed, replayed_bars=replayed)

    def _load(self, saved: SavedState) -> str:
        """Give the saved state to a fresh copy of the strategy and take its flows back; "" if it fitted, else why not."""
        fresh = type(self.strategy)(self.strategy.params)
        try:
            fresh.load_state(saved.state, saved.version)
        except StateError as exc:
            return str(exc)
        parents = []
        if saved.trading_date == self.trading_date:  # parents are of one day: older ones ended at their close
            try:
                parents = [ParentOrder.from_plain(p) for p in saved.parents]
            except (TypeError, ValueError, KeyError) as exc:
                return f"saved parent orders do not fit: {exc}"
        self._bind(fresh)
        for code, rows in saved.flows.items():
            if code in self._flows:
                self._flows[code] = [FlowData(code, *row) for row in rows]
        for parent in parents:
            if parent.code in self._bars:
                self._parents[parent.parent_id] = parent
                self._child_parent.update((child, parent) for child in parent.children)
                # the book of record (synced before start) also has the fills that came after the save
                orders = self.portfolio.orders
                parent.filled_qty = max(parent.filled_qty, sum(orders[c].filled_qty for c in parent.children if c in orders))
                if parent.filled_qty >= parent.qty:
                    parent.end(ParentStatus.FILLED, "filled")
                n = parent.parent_id.rpartition("-P")[2]
                self._parent_seq = max(self._parent_seq, int(n) if n.isdigit() else 0)
        return ""

    def _warm(self, through: Mapping[str, int] | None) -> tuple[int, int]:
        """Fill the windows from the queued bars; bars newer than ``through`` also go to the strategy, trading refused."""
        bars, self._warm_up = self._warm_up, []
        if not bars:
            return 0, 0
        latest: dict[tuple[int, str], BarData] = {}
        for b in bars:
            latest[(b.ts_ns, b.code)] = b  # a later copy of a bar (a correction) replaces the earlier
        marks, now = dict(self._marks), self._now
        warmed = replayed = 0
        self._warming = True
        try:
            for key in sorted(latest):
                bar = latest[key]
                rows = self._bars.get(bar.code)
                if rows is None or (rows and bar.ts_ns <= rows[-1].ts_ns):
                    continue
                warmed += 1
                if through is None or bar.ts_ns <= through.get(bar.code, 0):
                    rows.append(bar)
                    if len(rows) > self._trim_at:
                        del rows[: -self._history]
                    self._marks[bar.code] = bar.close
                else:
                    self.on_bar(bar)
                    replayed += 1
        finally:
            self._warming = False
        self._marks.update(marks)  # prices known at start (the book's, a snapshot's) are newer than any recorded bar
        self._now = max(now, self._now)
        self._market_ns = max(self._market_ns, now)
        self.warmed_through = {code: rows[-1].ts_ns for code, rows in self._bars.items() if rows}
        if replayed:
            self.log(f"warm-up: {warmed} recorded bar(s), {replayed} of them newer than the saved state replayed")
        return warmed, replayed

    def on_bar(self, bar: BarData) -> None:
        """A new bar: keep it, mark the book, then the strategy's ``on_bar``."""
        code, ts_ns, _, _, _, close, _ = bar  # one unpack, not three attribute reads: the per-bar path
        rows = self._bars.get(code)
        if rows is None:
            self.ignored_events += 1
            return
        self._now = self._market_ns = ts_ns
        rows.append(bar)
        if len(rows) > self._trim_at:
            del rows[: -self._history]
        self._marks[code] = close
        if self.halted_by_errors:
            return
        # inlined rather than via _call: this is the back-tester's per-bar path
        try:
            self._strategy_on_bar(self, bar)
        except Exception as exc:  # a strategy bug must not take the agent down
            self._failed("on_bar", exc)
        else:
            if self.consecutive_errors:  # a read, not a store per bar: a run of errors is rare
                self.consecutive_errors = 0
        if self._parents:
            for parent in self._parents.values():
                if parent.code == bar.code and parent.is_working:
                    parent.on_bar_volume(bar.ts_ns, bar.volume)
                    self._work(parent)

    def on_tick(self, tick: TickData) -> None:
        """A trade print: mark the book, then the strategy's ``on_tick``."""
        if tick.code not in self._bars:
            self.ignored_events += 1
            return
        self._now = self._market_ns = tick.ts_ns
        self._marks[tick.code] = tick.price
        self._call("on_tick", self.strategy.on_tick, tick)

    def on_flow(self, flow: FlowData) -> None:
        """Investor flows: keep them, then the strategy's ``on_flow``."""
        rows = self._flows.get(flow.code)
        if rows is None:
            self.ignored_events += 1
            return
        self._now = self._market_ns = flow.ts_ns
        rows.append(flow)
        if len(rows) > self._trim_at:
            del rows[: -self._history]
        self._call("on_flow", self.strategy.on_flow, flow)

    def on_fill(self, fill: FillData) -> bool:
        """An execution: book it once (by exec id), then the strategy's ``on_fill``; False if a duplicate."""
        self._now = max(self._now, fill.ts_ns)
        applied = self.portfolio.on_fill(
            fill.exec_id, fill.client_order_id, fill.code, fill.side, fill.qty, fill.price, fill.fee_won, fill.tax_won, fill.ts_ns
        )
        if applied:
            parent = self._child_parent.get(fill.client_order_id) if self._child_parent else None
            if parent is not None:
                parent.filled_qty += fill.qty
                parent.child_refusals = 0
                if parent.filled_qty >= parent.qty:
                    parent.end(ParentStatus.FILLED, "filled")
            if self._strategy_on_fill is None:
                if not self.halted_by_errors:  # what the no-op call would do: a success ends a run of errors
                    self.consecutive_errors = 0
            else:
                self._call("on_fill", self._strategy_on_fill, fill)
        return applied

    def on_order_event(self, event: OrderEventData) -> None:
        """An order's new state: update the book's holds, then the strategy's ``on_order_event``."""
        self._now = max(self._now, event.ts_ns)
        if self.portfolio.on_order_event(event.client_order_id, event.status, event.ts_ns) is None:
            refusal = None
            if event.status == "rejected":
                self.log(f"order {event.client_order_id} rejected: {event.reason_code}")
                refusal = self._order_refused(event)
            elif event.status == "accepted":
                self.refusals.on_accepted(event.code, event.side)
            if self._strategy_on_order_event is None:
                if not self.halted_by_errors:  # as for on_fill
                    self.consecutive_errors = 0
            else:
                self._call("on_order_event", self._strategy_on_order_event, event)
            if refusal is not None and self._strategy_on_refused is not None:
                self._call("on_refused", self._strategy_on_refused, refusal)

    def _order_refused(self, event: OrderEventData) -> Refusal:
        """A refusal of a sent order: remembered for its backoff, its parent told, a storm alerted."""
        order = self.portfolio.orders.get(event.client_order_id)
        qty, price = (order.qty, order.price) if order is not None else (event.remaining_qty, 0)
        parent = self._child_parent.get(event.client_order_id)
        refusal = Refusal(event.client_order_id, event.code, event.side, qty, price, event.reason_code, "", event.ts_ns,
                          parent.parent_id if parent is not None else "")
        self._heard(refusal)
        if parent is not None and parent.is_working:
            parent.child_refusals += 1
            if parent.child_refusals >= MAX_CHILD_REFUSALS:
                parent.end(ParentStatus.CANCELED, f"{parent.child_refusals} children refused in a row, last {event.reason_code}")
                self.log(f"{parent.parent_id} stopped: {parent.reason}")
        return refusal

    def on_session(self, phase: SessionPhase | str, ts_ns: int, trading_date: str = "") -> None:
        """A change of trading phase; at ``closing`` open orders are cancelled after the strategy had its say.

        At ``closed`` the last price becomes the next day's base price.
        """
        phase = SessionPhase(phase)
        self._now = self._market_ns = ts_ns
        self.phase = phase
        if trading_date:
            self.trading_date = trading_date
        self.refusals.on_session_change()
        self._call("on_session", self.strategy.on_session, phase)
        if phase is SessionPhase.CLOSING:
            self._end_parents(ParentStatus.EXPIRED, "the close")
            self.cancel_all()
        elif phase is SessionPhase.CLOSED:
            self._end_parents(ParentStatus.EXPIRED, "the close")
            self._parents.clear()
            self._child_parent.clear()
            self.refusals.on_day_end()
            for code in self.codes:
                self.set_base_price(code, self._marks.get(code, 0))

    def on_timer(self, now_ns: int) -> None:
        """A periodic wake-up in market time."""
        self._now = self._market_ns = now_ns
        self._call("on_timer", self.strategy.on_timer, now_ns)

    def _call(self, where: str, callback: Any, arg: Any) -> None:
        if self.halted_by_errors:
            return
        try:
            callback(self, arg)
        except Exception as exc:  # a strategy bug must not take the agent down
            self._failed(where, exc)
        else:
            self.consecutive_errors = 0
