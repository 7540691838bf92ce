"""Boundary checks of order entry: what the order manager refuses before risk or the broker see an order.

Pure: the session phase and the trading date are passed in. Each check answers
``None`` (fine) or an ``EntryRefusal`` with a standard reason code, so a bad
request becomes a REJECTED order with that reason, never a crash. The risk
guard checks limits, cash and holdings; these are the facts the order manager
can tell alone: the client order id's syntax and owner, the agent, the code,
the price grid and whether the market takes orders at all.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from core import krx
from core.instruments import Instrument
from core.messages import OrderRequest, OrderType, SessionPhase

CLIENT_ORDER_ID_RE = re.compile(r"^(?P<agent>.+)-(?P<date>[0-9]{8})-(?P<n>[0-9]{1,12})$")
MIN_PAPER_PRICE_WON = 1  # a price must be positive; the broker applies its own floor

# Phases in which the market takes new orders (pre-open collects for the opening auction,
# closing collects for the closing auction).
ORDER_PHASES = frozenset({SessionPhase.PRE_OPEN, SessionPhase.OPEN, SessionPhase.CLOSING})


class EntryReason:
    """Reason codes of refusals at order entry."""

    INVALID_CLIENT_ORDER_ID = "INVALID_CLIENT_ORDER_ID"
    UNKNOWN_AGENT = "UNKNOWN_AGENT"
    UNKNOWN_CODE = "UNKNOWN_CODE"
    INVALID_PRICE = "INVALID_PRICE"
    BAD_TICK = "BAD_TICK"
    MARKET_CLOSED = "MARKET_CLOSED"
    WRONG_TRADING_DATE = "WRONG_TRADING_DATE"


@dataclass(frozen=True, slots=True)
class EntryRefusal:
    """Why an order is refused at entry."""

    reason_code: str
    text: str


@dataclass(frozen=True, slots=True)
class ClientOrderId:
    """The parts of a client order id ``<agent_id>-<YYYYMMDD>-<n>``."""

    agent_id: str
    trading_date: str
    n: int


def parse_client_order_id(client_order_id: str) -> ClientOrderId | None:
    """Split a client order id into agent, date and sequence number; None if it has another form."""
    m = CLIENT_ORDER_ID_RE.match(client_order_id)
    if m is None:
        return None
    return ClientOrderId(m["agent"], m["date"], int(m["n"]))


def check_order(
    req: OrderRequest,
    *,
    agents: Collection[str],
    instruments: Mapping[str, Instrument],
    phase: SessionPhase | None,
    trading_date: str,
) -> EntryRefusal | None:
    """The first reason to refuse ``req`` at entry, or None when it may go on to risk."""
    coid = parse_client_order_id(req.client_order_id)
    if coid is None or coid.agent_id != req.agent_id:
        return EntryRefusal(
            EntryReason.INVALID_CLIENT_ORDER_ID,
            f"client order id {req.client_order_id!r} must read '{req.agent_id}-<YYYYMMDD>-<n>'",
        )
    if req.agent_id not in agents:
        return EntryRefusal(EntryReason.UNKNOWN_AGENT, f"agent {req.agent_id!r} is not in the roster")
    if trading_date and coid.trading_date != trading_date:
        return EntryRefusal(
            EntryReason.WRONG_TRADING_DATE,
            f"client order id {req.client_order_id!r} is dated {coid.trading_date}, the trading day is {trading_date}",
        )
    problem = krx.validate_code(req.code, instruments)
    if problem is not None:
        return EntryRefusal(EntryReason.UNKNOWN_CODE, f"code {req.code!r} cannot be traded: {problem}")
    if req.order_type is OrderType.LIMIT:
        if req.price < MIN_PAPER_PRICE_WON:
            return EntryRefusal(EntryReason.INVALID_PRICE, f"a limit order needs a positive price, not {req.price}")
        if not krx.is_on_tick(req.price):
            tick = krx.tick_size(req.price)
            return EntryRefusal(EntryReason.BAD_TICK, f"price {req.price} is not on the {tick}-won tick grid")
    elif req.price != 0:
        return EntryRefusal(EntryReason.INVALID_PRICE, f"a market order carries price 0, not {req.price}")
    if phase is not None and phase not in ORDER_PHASES:
        return EntryRefusal(EntryReason.MARKET_CLOSED, f"the market takes no orders in the {phase} phase")
    return None
