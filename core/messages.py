"""The message catalogue: every message that crosses a process boundary.

Each message is a frozen pydantic model with a stable type name (``TYPE``) and a
schema version (``VERSION``). Money is integer won, quantities are integer
shares, timestamps are integer nanoseconds since the epoch (UTC).

The bus codec looks a decoded frame's type up in ``REGISTRY`` and validates the
payload into that model; a message that is not registered here cannot travel.
Later capabilities extend this catalogue; they do not invent side channels.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

CODE_PATTERN = r"^[0-9]{4}[0-9A-HJ-NP-TV-Z][0-9A-Z]$"

Code = Annotated[str, Field(pattern=CODE_PATTERN)]
# Amounts, quantities and times fit a signed 64-bit integer, as every store and column
# downstream (SQLite, Arrow) needs; a larger number on the wire is refused at decode.
INT64_MAX = 2**63 - 1
Won = Annotated[int, Field(ge=0, le=INT64_MAX)]
SignedWon = int
Qty = Annotated[int, Field(ge=0, le=INT64_MAX)]
TsNs = Annotated[int, Field(ge=0, le=INT64_MAX)]
# Names end up in topics (``oms.event.<agent_id>``), file names and logs: no control characters.
NAME_PATTERN = r"^[^\x00-\x1f\x7f]+$"
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=NAME_PATTERN)]


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    LIMIT = "limit"
    MARKET = "market"


class OrderStatus(StrEnum):
    """States of an order's life (DESIGN section 5)."""

    NEW = "new"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCEL_PENDING = "cancel_pending"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"


TERMINAL_STATUSES = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)


class SessionPhase(StrEnum):
    """Phases of the trading day as announced on ``md.session``."""

    PRE_OPEN = "pre_open"  # opening call auction collecting orders
    OPEN = "open"  # continuous trading
    CLOSING = "closing"  # closing call auction collecting orders
    CLOSED = "closed"  # the day is over; day roll may run
    AFTER_HOURS = "after_hours"


def market_closed(phase: SessionPhase | str | None) -> bool:
    """No session announced yet (before the pre-open), or the day's session is over."""
    return phase is None or phase == SessionPhase.CLOSED


class AlertLevel(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class Message(BaseModel):
    """Base of every bus message: frozen, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1


REGISTRY: dict[str, type[Message]] = {}

M = TypeVar("M", bound=BaseModel)
_set_fields = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def from_checked(cls: type[M], values: dict[str, Any]) -> M:
    """An instance of ``cls`` holding ``values``, which the caller has already checked against its fields.

    What pydantic's own validator does once it has validated the fields, without
    validating them a second time (``model_construct`` walks the field defaults
    and costs more than the validation it skips). ``values`` must name every
    field; it becomes the instance's ``__dict__``.
    """
    inst = object.__new__(cls)
    object.__setattr__(inst, "__dict__", values)
    _set_fields(inst, set(values))
    _set_extra(inst, None)
    _set_private(inst, None)
    return inst


def register(cls: type[Message]) -> type[Message]:
    """Add a message class to the catalogue under its stable type name."""
    if not cls.TYPE:
        raise TypeError(f"{cls.__name__} has no TYPE")
    if cls.TYPE in REGISTRY and REGISTRY[cls.TYPE] is not cls:
        raise TypeError(f"message type {cls.TYPE!r} registered twice")
    REGISTRY[cls.TYPE] = cls
    return cls


# --- market data -------------------------------------------------------------


@register
class Tick(Message):
    """One trade print (or the last price) of an instrument."""

    TYPE: ClassVar[str] = "tick"
    code: Code
    ts_ns: TsNs
    price: Won
    qty: Qty
    cum_volume: Qty = 0
    bid: Won = 0
    ask: Won = 0


@register
class Bar(Message):
    """An OHLCV bar; ``ts_ns`` is the bar's start, ``interval_s`` its length."""

    TYPE: ClassVar[str] = "bar"
    code: Code
    ts_ns: TsNs
    interval_s: Annotated[int, Field(gt=0)] = 60
    open: Won
    high: Won
    low: Won
    close: Won
    volume: Qty
    value_won: Won = 0


@register
class InvestorFlow(Message):
    """Net buying by investor class, in shares (daily or intraday provisional)."""

    TYPE: ClassVar[str] = "investor_flow"
    code: Code
    ts_ns: TsNs
    foreign_net_qty: int
    institution_net_qty: int = 0
    individual_net_qty: int = 0
    provisional: bool = False
    # the figures are the day's running totals since the open (KRX's 투자자별 매매동향 and KIS's
    # inquire-investor both report so); a follower wants the change from the previous report
    cumulative: bool = True
    trading_date: Annotated[str, Field(pattern=r"^([0-9]{8})?$")] = ""


@register
class Quote(Message):
    """A code's order book at one instant: up to 10 price levels a side, best first (KIS's H0STASP0).

    ``bid_px[0]`` is the best bid, ``ask_px[0]`` the best ask; ``bid_qty[k]`` the
    shares shown at ``bid_px[k]``. A side with no level has empty lists.
    """

    TYPE: ClassVar[str] = "quote"
    code: Code
    ts_ns: TsNs
    bid_px: list[int] = Field(default_factory=list, max_length=10)
    bid_qty: list[int] = Field(default_factory=list, max_length=10)
    ask_px: list[int] = Field(default_factory=list, max_length=10)
    ask_qty: list[int] = Field(default_factory=list, max_length=10)
    # a volatility interruption (VI) in force: the code trades in a single-price auction until ``vi_until_ns``
    vi: Annotated[str, Field(pattern=r"^(|static|dynamic)$")] = ""
    vi_until_ns: int = 0

    @model_validator(mode="after")
    def _levels(self) -> Quote:
        if len(self.bid_px) != len(self.bid_qty) or len(self.ask_px) != len(self.ask_qty):
            raise ValueError("each price level needs its quantity")
        if any(p <= 0 for p in self.bid_px + self.ask_px) or any(q < 0 for q in self.bid_qty + self.ask_qty):
            raise ValueError("prices must be positive and quantities not negative")
        if self.bid_px and self.ask_px and self.bid_px[0] >= self.ask_px[0]:
            raise ValueError(f"best bid {self.bid_px[0]} is not below best ask {self.ask_px[0]}")
        return self


@register
class Fundamentals(Message):
    """An earnings announcement of a code: per-share figures in won, in force from ``effective_date``.

    EPS is the trailing four quarters' earnings per share, BPS book value per
    share, DPS the annual dividend per share. ``source`` says where it came from:
    ``sim`` (the simulated world), ``csv`` (a user's file of announcements),
    ``kis`` (the broker's inquire-price) or ``master`` (the instrument master).
    """

    TYPE: ClassVar[str] = "fundamentals"
    code: Code
    ts_ns: TsNs
    effective_date: Annotated[str, Field(pattern=r"^[0-9]{8}$")]
    eps: int
    bps: int
    dps: Annotated[int, Field(ge=0)] = 0
    source: Annotated[str, Field(pattern=r"^(sim|csv|kis|master)$")] = "sim"


@register
class SessionEvent(Message):
    """A change of trading phase, stamped with the market's clock."""

    TYPE: ClassVar[str] = "session_event"
    phase: SessionPhase
    trading_date: Annotated[str, Field(pattern=r"^[0-9]{8}$")]
    ts_ns: TsNs
    clock_speed: float = 1.0


@register
class DayReference(Message):
    """A code's reference price for a trading day (기준가, yesterday's close as the exchange set it) and the
    day's price limits, from the venue: what price bands and market-buy reservations are measured against."""

    TYPE: ClassVar[str] = "day_reference"
    code: Code
    trading_date: Annotated[str, Field(pattern=r"^[0-9]{8}$")]
    ts_ns: TsNs
    base_price: Annotated[int, Field(gt=0)]
    lower_limit: Annotated[int, Field(gt=0)]
    upper_limit: Annotated[int, Field(gt=0)]


# --- orders ------------------------------------------------------------------


@register
class OrderRequest(Message):
    """A new order from an agent. ``price`` is 0 for a market order."""

    TYPE: ClassVar[str] = "order_request"
    client_order_id: Name
    agent_id: Name
    code: Code
    side: Side
    order_type: OrderType = OrderType.LIMIT
    qty: Annotated[int, Field(gt=0)]
    price: Won = 0
    ts_ns: TsNs = 0


@register
class CancelRequest(Message):
    """Cancel (part of) an open order. ``qty`` 0 means all that remains."""

    TYPE: ClassVar[str] = "cancel_request"
    client_order_id: Name
    agent_id: Name
    qty: Qty = 0
    ts_ns: TsNs = 0


@register
class OrderEvent(Message):
    """A change in an order's state, with a reason code and text on refusals."""

    TYPE: ClassVar[str] = "order_event"
    client_order_id: Name
    agent_id: Name
    code: Code
    side: Side
    status: OrderStatus
    qty: Qty = 0
    price: Won = 0
    filled_qty: Qty = 0
    remaining_qty: Qty = 0
    avg_fill_price: Won = 0
    broker_order_id: str = ""
    reason_code: str = ""
    reason_text: str = ""
    ts_ns: TsNs = 0


@register
class Fill(Message):
    """An execution, identified by the broker's execution id."""

    TYPE: ClassVar[str] = "fill"
    exec_id: Name
    client_order_id: Name
    agent_id: Name
    code: Code
    side: Side
    qty: Annotated[int, Field(gt=0)]
    price: Annotated[int, Field(gt=0)]
    fee_won: Won = 0
    tax_won: Won = 0
    broker_order_id: str = ""
    ts_ns: TsNs = 0


@register
class LedgerAdjustment(Message):
    """A change of an agent's book that no fill explains, booked in the ledger (``oms.event.<agent_id>``)."""

    TYPE: ClassVar[str] = "ledger_adjustment"
    adjustment_id: Name
    agent_id: Name
    code: Code
    qty: int = 0
    cash_won: SignedWon = 0
    cost_won: Won = 0
    reason: str = ""
    who: str = ""
    ts_ns: TsNs = 0


# --- books -------------------------------------------------------------------


class PositionLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    code: Code
    qty: Qty
    avg_price: Won = 0


@register
class PositionSnapshot(Message):
    """Holdings of one owner: an agent id, or ``account`` for the broker account."""

    TYPE: ClassVar[str] = "position_snapshot"
    owner: Name
    ts_ns: TsNs
    positions: tuple[PositionLine, ...] = ()


@register
class AccountSnapshot(Message):
    """Cash and PnL of one owner (an agent id or ``account``)."""

    TYPE: ClassVar[str] = "account_snapshot"
    owner: Name
    ts_ns: TsNs
    cash_won: SignedWon
    cash_available_won: SignedWon = 0
    cash_on_hold_won: Won = 0
    equity_won: SignedWon = 0
    realized_pnl_won: SignedWon = 0
    unrealized_pnl_won: SignedWon = 0
    fees_won: Won = 0
    taxes_won: Won = 0


# --- operations --------------------------------------------------------------


@register
class Heartbeat(Message):
    """Sent by every process each second (or each ``interval_s``); ``last_seq`` reveals tail drops."""

    TYPE: ClassVar[str] = "heartbeat"
    name: Name
    pid: Annotated[int, Field(ge=0)]
    state: str = "running"
    ts_ns: TsNs
    rss_bytes: Annotated[int, Field(ge=0)] = 0
    cpu_pct: float = 0.0
    last_seq: Annotated[int, Field(ge=0)] = 0
    queue_depth: Annotated[int, Field(ge=0)] = 0
    interval_s: Annotated[float, Field(ge=0)] = 0.0  # the next one comes within this long (0: the bus's interval)
    info: dict[str, Any] = Field(default_factory=dict)


@register
class Alert(Message):
    """Something a person should know about."""

    TYPE: ClassVar[str] = "alert"
    level: AlertLevel
    source: Name
    kind: Name
    text: str
    ts_ns: TsNs


@register
class Command(Message):
    """A request to a process (RPC or ``sys.command.<name>``).

    ``command_id`` is the idempotency key of state-changing commands.
    """

    TYPE: ClassVar[str] = "command"
    command_id: Name
    name: Name
    args: dict[str, Any] = Field(default_factory=dict)
    who: str = ""
    ts_ns: TsNs = 0


@register
class CommandResult(Message):
    """The answer to a Command."""

    TYPE: ClassVar[str] = "command_result"
    command_id: Name
    ok: bool
    result: Any = None
    error: str = ""
    reason_code: str = ""


# --- risk and reconciliation -------------------------------------------------


@register
class RiskState(Message):
    """The risk guard's trading state (ACTIVE / REDUCING / HALTED), why, who set it, and per-agent usage."""

    TYPE: ClassVar[str] = "risk_state"
    state: Annotated[str, Field(pattern=r"^(ACTIVE|REDUCING|HALTED)$")]
    reason: str = ""
    who: str = ""
    ts_ns: TsNs
    consistent: bool = True
    usage: dict[str, dict[str, Any]] = Field(default_factory=dict)


@register
class ReconReport(Message):
    """One reconciliation of broker, order journal and agents' books: each difference, its class and action."""

    TYPE: ClassVar[str] = "recon_report"
    report_id: Name
    ts_ns: TsNs
    trigger: str = ""
    clean: bool
    differences: tuple[dict[str, Any], ...] = ()
    healed: tuple[dict[str, Any], ...] = ()
    halted: bool = False
    sources: dict[str, Any] = Field(default_factory=dict)
    breaks: tuple[dict[str, Any], ...] = ()  # differences nothing in flight explains, until resolved or adjusted
    pending: tuple[dict[str, Any], ...] = ()  # differences an order in flight or a fill not yet applied explains


@register
class Health(Message):
    """The supervisor's view of every process and agent (``sys.health``): one row per process."""

    TYPE: ClassVar[str] = "health"
    ts_ns: TsNs
    rows: tuple[dict[str, Any], ...] = ()


def message_types() -> dict[str, type[Message]]:
    """A copy of the catalogue, by type name."""
    return dict(REGISTRY)
