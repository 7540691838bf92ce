"""The paper exchange's records: orders, executions, updates and refusals, accounts and their views.

Small slotted dataclasses the matching engine (``core.matching``, which
re-exports these names) builds on its hot path and the shells convert to
``core.messages`` at their boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from core.messages import OrderStatus, OrderType, Side

_OPEN_STATUSES = frozenset({OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED})


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
