"""The broker client of the firm: the Broker interface over the venue protocol (``core.venue``).

Whichever venue process runs (the paper exchange, or the KIS gateway when
``broker.kind = "kis"``), the order manager, the market-data feed and the
reconciler reach it through this one client. Requests go to ``exchange_rpc``
through a Lazy Pirate ``RpcClient`` (timeout and bounded retries); a call
that gets no answer raises ``BrokerUnavailable`` and a refusal that is not
about an order (an unknown command, a bad argument, a cancel of an order the
venue never saw: ``UNKNOWN_ORDER``) raises ``BrokerError`` with the venue's
reason code. Order refusals are ordinary answers: a REJECTED ``OrderEvent``
with its reason.

New orders carry their client order id as the RPC idempotency key, so a retry
after a lost reply never places a second order (every venue is idempotent on
the client order id as well). ``connection_state`` is CONNECTED after a call
that got an answer and DISCONNECTED after one that did not; reconnecting is the
caller's policy (see ``services.broker.backoff.Backoff``).
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from typing import Any

import zmq

from bus.latency import Histogram
from bus.pubsub import Subscriber
from bus.rpc import RpcClient, RpcError, RpcFailure
from core.config import StackSettings
from core.messages import CancelRequest, Command, CommandResult, Fill, Message, OrderEvent, OrderRequest
from core.venue import EXEC_TOPIC_PREFIX
from services.broker.base import Broker, BrokerError, BrokerUnavailable, ConnectionState

BAD_REPLY = "BAD_REPLY"


class VenueBroker(Broker):
    """The venue as a broker: orders, queries and notices over its RPC and feed."""

    def __init__(
        self,
        ctx: zmq.Context,
        settings: StackSettings,
        *,
        timeout_ms: int | None = None,
        retries: int | None = None,
        sender: str = "",
    ) -> None:
        self.ctx = ctx
        self.settings = settings
        self.place_latency = Histogram()  # µs from sending a new order to the venue's answer
        self._rpc = RpcClient(
            ctx,
            settings.endpoint("exchange_rpc"),
            timeout_ms=settings.bus.rpc_timeout_ms if timeout_ms is None else timeout_ms,
            retries=settings.bus.rpc_retries if retries is None else retries,
            sender=sender or f"venue-client-{os.getpid()}",
        )
        self._state = ConnectionState.DISCONNECTED
        self._command_ids = itertools.count(1)
        self._id_prefix = uuid.uuid4().hex[:10]
        self._subscribers: list[Subscriber] = []

    # --- orders --------------------------------------------------------------

    def place(self, request: OrderRequest) -> OrderEvent:
        """Send a new order; ACCEPTED with the broker order number, or REJECTED with a reason."""
        started = time.perf_counter_ns()
        try:
            return self._expect(self._call(request, key=f"order:{request.client_order_id}"), OrderEvent)
        finally:
            self.place_latency.add((time.perf_counter_ns() - started) / 1000)

    def cancel(self, request: CancelRequest) -> OrderEvent:
        """Cancel (part of) an order; CANCELED, or REJECTED with a reason (BrokerError UNKNOWN_ORDER)."""
        return self._expect(self._call(request, key=f"cancel:{uuid.uuid4().hex}"), OrderEvent)

    # --- queries ---------------------------------------------------------------

    def order_status(self, client_order_id: str) -> OrderEvent | None:
        """The exchange's record of one order, or None if it never arrived."""
        raw = self.command("order_status", {"client_order_id": client_order_id})
        return None if raw is None else OrderEvent.model_validate(raw)

    def open_orders(self) -> list[OrderEvent]:
        """Orders open at the venue now."""
        return [OrderEvent.model_validate(r) for r in self.command("open_orders") or []]

    def orders_today(self, trading_date: str = "") -> list[OrderEvent]:
        """Every order of the trading day (or of a closed day, ``trading_date``) in its latest state."""
        args = {"trading_date": trading_date} if trading_date else {}
        return [OrderEvent.model_validate(r) for r in self.command("orders_today", args) or []]

    def fills_today(self, trading_date: str = "", *, fresh: bool = False) -> list[Fill]:
        """Every execution of the trading day (or of a closed day) with the venue's execution ids."""
        args: dict[str, Any] = {"trading_date": trading_date} if trading_date else {}
        if fresh:
            args["fresh"] = True
        return [Fill.model_validate(r) for r in self.command("fills_today", args) or []]

    def account(self, *, fresh: bool = False) -> dict[str, Any]:
        """Cash, buying power, fees, taxes and equity of the account (won); ``fresh``: read now, not kept."""
        return dict(self.command("account", {"fresh": True} if fresh else None) or {})

    def positions(self) -> dict[str, dict[str, int]]:
        """Holdings by code: {code: {"qty": int, "avg_price": int}}."""
        return {code: dict(p) for code, p in (self.command("positions") or {}).items()}

    def ping(self) -> dict[str, Any]:
        """The exchange's clock and session: {ts_ns, trading_date, session, clock_speed}."""
        return dict(self.command("ping") or {})

    def quote(self, code: str) -> dict[str, int]:
        """Last price, touch, tick size and today's limits of a code."""
        return dict(self.command("quote", {"code": code}) or {})

    def fault(self, **args: Any) -> Any:
        """Inject a fault at the venue (the paper exchange: disconnect, delay, reject_fraction, ...; the KIS gateway: kis-sim faults)."""
        return self.command("fault", args)

    def command(self, name: str, args: dict[str, Any] | None = None) -> Any:
        """Run a named exchange command and return its result; BrokerError when it is refused."""
        cmd = Command(command_id=f"{self._id_prefix}-{next(self._command_ids)}", name=name, args=args or {})
        result = self._expect(self._call(cmd, key=None), CommandResult)
        if not result.ok:
            raise BrokerError(result.reason_code or "COMMAND_FAILED", result.error)
        return result.result

    # --- notices -------------------------------------------------------------

    def subscribe_notices(self) -> Subscriber:
        """A subscriber to the venue's execution notices (``exec.event`` OrderEvents, ``exec.fill`` Fills)."""
        return self._subscribe([EXEC_TOPIC_PREFIX])

    def subscribe_market(self, codes: list[str] | None = None) -> Subscriber:
        """A subscriber to the venue's market data (all of it, or ticks, bars, flows, references, books and
        fundamentals of ``codes``)."""
        if not codes:
            return self._subscribe(["md."])
        topics = ["md.session"]
        for code in codes:
            topics += [f"md.tick.{code}", f"md.bar.1m.{code}", f"md.flow.{code}", f"md.ref.{code}", f"md.quote.{code}",
                       f"md.fund.{code}"]
        return self._subscribe(topics)

    def _subscribe(self, topics: list[str]) -> Subscriber:
        sub = Subscriber(
            self.ctx,
            self.settings.endpoint("exchange_feed"),
            topics,
            rcvhwm=self.settings.bus.rcvhwm,
            linger_ms=self.settings.bus.linger_ms,
        )
        self._subscribers.append(sub)
        return sub

    # --- connection ------------------------------------------------------------

    @property
    def connection_state(self) -> ConnectionState:
        """CONNECTED after a call that got an answer, DISCONNECTED after one that did not."""
        return self._state

    def close(self) -> None:
        """Close the RPC socket and every subscriber this client made."""
        self._rpc.close()
        for sub in self._subscribers:
            sub.close()
        self._subscribers.clear()

    def _call(self, msg: Message, *, key: str | None) -> Message:
        try:
            reply = self._rpc.call(msg, idempotency_key=key)
        except RpcError as exc:
            self._state = ConnectionState.CONNECTED  # it answered, with an error
            raise BrokerError(exc.reason_code, exc.text) from exc
        except RpcFailure as exc:  # timeout, unavailable, cannot send
            self._state = ConnectionState.DISCONNECTED
            raise BrokerUnavailable(str(exc)) from exc
        self._state = ConnectionState.CONNECTED
        return reply

    @staticmethod
    def _expect(reply: Message, cls: type[Any]) -> Any:
        if isinstance(reply, cls):
            return reply
        if isinstance(reply, CommandResult) and not reply.ok:
            raise BrokerError(reply.reason_code or BAD_REPLY, reply.error)
        raise BrokerError(BAD_REPLY, f"expected {cls.__name__}, the venue answered {type(reply).__name__}")
