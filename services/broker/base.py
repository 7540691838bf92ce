"""The broker interface every broker client implements.

The order manager, the market-data feed and the reconciler talk to a broker only
through this interface; the implementation is the only place that knows the
broker's wire format. Calls never wait forever: each raises ``BrokerUnavailable``
when the broker does not answer in time, and ``connection_state`` tells whether
new orders may be sent.

Execution notices (order events and fills) and market data arrive
asynchronously on the socket returned by ``notice_socket()``; the owner polls it
and hands each readable frame to ``read_notice()``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import StrEnum
from typing import Any

from core.messages import CancelRequest, Fill, Message, OrderEvent, OrderRequest


class ConnectionState(StrEnum):
    """The connection state machine shared by every broker client (DESIGN section 5)."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    RECONNECTING = "reconnecting"
    RECONCILING = "reconciling"


class BrokerUnavailable(Exception):
    """The broker did not answer (disconnected, timed out, or refused the connection)."""


class BrokerError(Exception):
    """The broker answered with an error (reason code and text)."""

    def __init__(self, reason_code: str, text: str):
        super().__init__(f"{reason_code}: {text}")
        self.reason_code = reason_code
        self.text = text


class Broker(ABC):
    """What the firm needs from a broker."""

    @abstractmethod
    def place(self, request: OrderRequest) -> OrderEvent:
        """Send a new order; the answer is ACCEPTED (with the broker order id) or REJECTED."""

    @abstractmethod
    def cancel(self, request: CancelRequest) -> OrderEvent:
        """Cancel (part of) an order; CANCELED / CANCEL_PENDING, or REJECTED with a reason."""

    @abstractmethod
    def order_status(self, client_order_id: str) -> OrderEvent | None:
        """The broker's record of one order by client order id, or None if it never arrived."""

    @abstractmethod
    def open_orders(self) -> list[OrderEvent]:
        """Orders open at the broker now."""

    @abstractmethod
    def orders_today(self, trading_date: str = "") -> list[OrderEvent]:
        """Every order of the trading day (or of the closed day ``trading_date``), in its latest state."""

    @abstractmethod
    def fills_today(self, trading_date: str = "", *, fresh: bool = False) -> list[Fill]:
        """Every execution of the trading day (or of the closed day ``trading_date``), with the broker's ids.

        ``fresh``: read the broker's record now, never a reading kept from a moment ago (see ``account``).
        """

    @abstractmethod
    def account(self, *, fresh: bool = False) -> dict[str, Any]:
        """Cash, buying power, fees and taxes of the account (won).

        A venue may answer account queries from a reading a moment old (the KIS
        gateway keeps KIS's balance a second, its daily orders two, within KIS's
        rate limit); ``fresh`` asks it to read its source now. The reconciler's
        second look at a difference is fresh, so that it never sees the first
        look's readings again.
        """

    @abstractmethod
    def positions(self) -> dict[str, dict[str, int]]:
        """Holdings by code: {code: {"qty": int, "avg_price": int}}."""

    @abstractmethod
    def ping(self) -> dict[str, Any]:
        """A cheap liveness check; returns the broker's clock and session."""

    @property
    @abstractmethod
    def connection_state(self) -> ConnectionState:
        """Whether the client believes the broker is reachable."""

    @abstractmethod
    def close(self) -> None:
        """Close every socket (finite linger)."""


__all__ = [
    "Broker",
    "BrokerError",
    "BrokerUnavailable",
    "ConnectionState",
    "Message",
]
