"""The paper exchange's records: its parameters, orders, executions, updates and refusals, accounts, quotes.

Small slotted dataclasses the matching engine (``core.matching``, which
re-exports these names) builds on its hot path and the shells convert to
``core.messages`` at their boundary. ``MatchingParams`` lives here so that the
engine and its order book (``core.book``) share it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from core.messages import OrderStatus, OrderType, Side

_OPEN_STATUSES = frozenset({OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED})


@dataclass(frozen=True, slots=True)
class MatchingParams:
    """The knobs of the simulated market (the models are in ``core.matching`` and ``core.book``).

    ``book=False`` turns the order book off: the touch is the last print on both
    sides, taken depth comes back at the next print, and there is no spread,
    impact or volatility interruption (the engine as it was before the book).
    """

    participation_pct: int = 20  # most of a print's volume our resting orders may take, per side
    depth_pct: int = 10  # shares shown at each price level, as a percentage of the recent volume
    min_depth_shares: int = 100
    volume_half_life_ns: int = 60_000_000_000  # of the decayed recent volume (about 87 s of trading)
    book: bool = True
    levels: int = 10  # price levels a side, as KIS's H0STASP0 shows them
    # spread in ticks = max(1, round(spread_vol_mult x minute sd x price x time-of-day factor / tick))
    spread_vol_mult: float = 1.0
    prior_minute_sd: float = 0.001  # the per-minute log-return sd assumed before prints say otherwise
    prior_minutes: float = 1.0  # the weight of that prior, in minutes of prints
    volatility_half_life_ns: int = 300_000_000_000  # of the realised variance of prints
    # time-of-day factor = 1 + open_boost e^(-minutes since the open / tau) + close_boost e^(-minutes to the closing auction / tau)
    open_spread_boost: float = 1.5
    close_spread_boost: float = 0.75
    spread_tau_minutes: float = 15.0
    refill_pct: int = 100  # taken depth comes back at this percentage of the market's volume rate
    # impact of our marketable order of q shares: the mid moves by impact_k x minute sd x price x sqrt(q / recent volume)
    impact_k: float = 1.0
    impact_half_life_ns: int = 60_000_000_000  # the move decays back with this half-life (mostly gone in 4-5 minutes)
    dynamic_vi_pct: int = 3  # KOSPI200 members
    dynamic_vi_pct_other: int = 6
    static_vi_pct: int = 10  # from the last single price (the base price or the last auction's)
    vi_ns: int = 120_000_000_000  # a VI is a 2-minute single-price auction


class Reason(StrEnum):
    """Why the venue refused an order or a cancel."""

    BAD_TICK = "BAD_TICK"
    OUTSIDE_PRICE_LIMITS = "OUTSIDE_PRICE_LIMITS"
    MARKET_CLOSED = "MARKET_CLOSED"
    INSUFFICIENT_CASH = "INSUFFICIENT_CASH"
    INSUFFICIENT_SHARES = "INSUFFICIENT_SHARES"
    UNKNOWN_CODE = "UNKNOWN_CODE"
    UNKNOWN_ACCOUNT = "UNKNOWN_ACCOUNT"
    INVALID_QUANTITY = "INVALID_QUANTITY"
    INVALID_PRICE = "INVALID_PRICE"
    INVALID_SIDE = "INVALID_SIDE"
    INVALID_ORDER_TYPE = "INVALID_ORDER_TYPE"
    UNKNOWN_ORDER = "UNKNOWN_ORDER"
    DUPLICATE_CLIENT_ORDER_ID = "DUPLICATE_CLIENT_ORDER_ID"
    CANCEL_QTY_EXCEEDS_REMAINING = "CANCEL_QTY_EXCEEDS_REMAINING"
    ORDER_NOT_OPEN = "ORDER_NOT_OPEN"



@dataclass(slots=True, eq=False)
class Order:
    """One order at the venue; ``price`` is 0 for a market order."""

    broker_order_id: str
    client_order_id: str
    account_id: str
    agent_id: str
    code: str
    side: Side
    order_type: OrderType
    qty: int
    price: int
    ts_ns: int
    seq: int
    remaining_qty: int
    status: OrderStatus = OrderStatus.ACCEPTED
    filled_qty: int = 0
    canceled_qty: int = 0  # cancelled or expired
    filled_value_won: int = 0
    reserved_won: int = 0
    queue_ahead: int = 0
    updated_ns: int = 0

    @property
    def is_open(self) -> bool:
        return self.status in _OPEN_STATUSES

    @property
    def avg_fill_price(self) -> int:
        """Average fill price in won, rounded half up (0 before the first fill)."""
        if not self.filled_qty:
            return 0
        return (2 * self.filled_value_won + self.filled_qty) // (2 * self.filled_qty)


@dataclass(slots=True)
class OrderUpdate:
    """A change in an order's state; refusals carry a reason code and text."""

    client_order_id: str
    broker_order_id: str
    account_id: str
    agent_id: str
    code: str
    side: str
    order_type: str
    status: OrderStatus
    qty: int
    price: int
    filled_qty: int
    remaining_qty: int
    canceled_qty: int
    avg_fill_price: int
    ts_ns: int
    reason_code: str = ""
    reason_text: str = ""


@dataclass(slots=True)
class Execution:
    """One fill, identified by an execution id unique within the venue."""

    exec_id: str
    broker_order_id: str
    client_order_id: str
    account_id: str
    agent_id: str
    code: str
    side: Side
    qty: int
    price: int
    fee_won: int
    tax_won: int
    ts_ns: int


@dataclass(slots=True)
class CancelRefused:
    """A cancel the venue would not carry out, with the reason."""

    order_ref: str
    qty: int
    reason_code: Reason
    reason_text: str
    ts_ns: int
    client_order_id: str = ""
    broker_order_id: str = ""


Event = OrderUpdate | Execution | CancelRefused


@dataclass(slots=True)
class EngineChanges:
    """What changed since the last ``take_changes()``: what an incremental store must write.

    ``new_day`` means yesterday's orders and fills are gone (a store drops its
    copies before writing ``orders`` and ``fills``). ``orders`` holds every order
    touched in any way (entry, fill, cancel, expiry, queue position);
    ``fills`` the executions booked since, in order. Accounts, holdings and the
    markets are small and are read whole through ``header_state()``.
    """

    new_day: bool
    orders: list[Order]
    fills: list[Execution]


@dataclass(slots=True)
class Holding:
    """Shares of one code in an account and what they cost (fees excluded)."""

    qty: int = 0
    book_cost_won: int = 0

    @property
    def avg_price(self) -> int:
        return (2 * self.book_cost_won + self.qty) // (2 * self.qty) if self.qty else 0


@dataclass(slots=True)
class Account:
    """An account's cash, holdings and running totals."""

    account_id: str
    cash_won: int
    holdings: dict[str, Holding] = field(default_factory=dict)
    cash_on_hold_won: int = 0
    offered_qty: dict[str, int] = field(default_factory=dict)
    fees_won: int = 0
    taxes_won: int = 0
    realized_pnl_won: int = 0


@dataclass(frozen=True, slots=True)
class PositionView:
    """A holding as a query answer, valued at the last price."""

    code: str
    qty: int
    avg_price: int
    book_cost_won: int
    sellable_qty: int
    last_price: int
    market_value_won: int


@dataclass(frozen=True, slots=True)
class BookQuote:
    """A code's order book as a query answer: levels best first, and a VI in force (``core.messages.Quote``)."""

    code: str
    ts_ns: int
    bid_px: list[int]
    bid_qty: list[int]
    ask_px: list[int]
    ask_qty: list[int]
    vi: str = ""  # "", "static" or "dynamic"
    vi_until_ns: int = 0

    @property
    def bid(self) -> int:
        return self.bid_px[0] if self.bid_px else 0

    @property
    def ask(self) -> int:
        return self.ask_px[0] if self.ask_px else 0


@dataclass(frozen=True, slots=True)
class AccountView:
    """An account snapshot as a query answer."""

    account_id: str
    cash_won: int
    cash_on_hold_won: int
    buying_power_won: int
    holdings_value_won: int
    equity_won: int
    fees_won: int
    taxes_won: int
    realized_pnl_won: int
