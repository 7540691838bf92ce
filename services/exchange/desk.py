"""The exchange's order desk: answers RPC requests against the venue (pure; time passed in).

* ``OrderRequest`` -> ``OrderEvent`` ACCEPTED (with the broker order number, and
  any immediate fills as notices) or REJECTED with a reason code. Idempotent on
  the client order id: a repeat gets the order's current record, never a second
  order (refusals are remembered for the day too).
* ``CancelRequest`` -> ``OrderEvent`` CANCELED, or REJECTED with the reason
  (``CANCEL_QTY_EXCEEDS_REMAINING``, ``ORDER_NOT_OPEN``); a cancel of an order
  the exchange never saw has no order to describe and is answered with
  ``CommandResult(ok=False, reason_code="UNKNOWN_ORDER")``.
* ``Command`` queries: ping / clock, account, positions, open_orders,
  orders_today, fills_today, order_status, quote.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.matching import CancelRefused, OrderUpdate
from core.messages import (
    CancelRequest,
    Command,
    CommandResult,
    Message,
    OrderEvent,
    OrderRequest,
    OrderStatus,
)
from core.orders import date_of_client_order_id
from core.venue import BAD_ARGS, QUERIES, UNKNOWN_CODE, UNKNOWN_COMMAND, UNKNOWN_ORDER, UNKNOWN_REQUEST
from services.exchange.venue import Outbound, PaperVenue, fill_from_execution, notices, order_event_from_order
from services.exchange.venue import order_event_from_update

PastDay = Callable[[str], "tuple[list[dict[str, Any]], list[dict[str, Any]]] | None"]

BROKER_REJECTED_RANDOM = "BROKER_REJECTED_RANDOM"


class Desk:
    """Turns requests into engine calls and engine answers into wire messages."""

    def __init__(self, venue: PaperVenue, account_id: str, rejected: dict[str, dict[str, Any]] | None = None,
                 past_day: PastDay | None = None, past_dates: Callable[[], list[str]] | None = None) -> None:
        self.venue = venue
        self.past_day = past_day or (lambda date: None)  # a closed day's (orders, fills) as the wire has them
        self.past_dates = past_dates or list
        self.engine = venue.engine
        self.account_id = account_id
        # today's refused orders by client order id (the engine keeps only accepted ones)
        self.rejected: dict[str, dict[str, Any]] = dict(rejected or {})
        self.unsaved_refusals: list[str] = []  # client order ids the store has not written yet

    def day_record(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Today's orders (refusals included) and executions as the queries answer them, to keep after the night."""
        engine, account_id = self.engine, self.account_id
        orders = [order_event_from_order(o).model_dump(mode="json") for o in engine.orders_today(account_id)]
        orders += list(self.rejected.values())
        fills = [fill_from_execution(e).model_dump(mode="json") for e in engine.fills_today(account_id)]
        return orders, fills

    def new_day(self) -> None:
        """Forget yesterday's refusals (the engine forgets yesterday's orders itself)."""
        self.rejected.clear()
        self.unsaved_refusals.clear()

    def take_unsaved_refusals(self) -> list[tuple[str, dict[str, Any]]]:
        """Today's refusals not handed to the store yet, and forget that they were unsaved."""
        out = [(coid, self.rejected[coid]) for coid in self.unsaved_refusals if coid in self.rejected]
        self.unsaved_refusals.clear()
        return out

    def _remember_refusal(self, reply: OrderEvent) -> None:
        self.rejected[reply.client_order_id] = reply.model_dump(mode="json")
        self.unsaved_refusals.append(reply.client_order_id)
        self.venue.changed = True

    def place(self, req: OrderRequest, now_ns: int, *, reject_at_random: bool = False) -> tuple[OrderEvent, Outbound]:
        """Enter a new order; returns the reply and the notices it caused."""
        known = self.engine.order_by_client_id(req.client_order_id)
        if known is not None:
            return order_event_from_order(known), []
        if req.client_order_id in self.rejected:
            return OrderEvent.model_validate(self.rejected[req.client_order_id]), []
        if reject_at_random:
            reply = OrderEvent(
                client_order_id=req.client_order_id, agent_id=req.agent_id, code=req.code, side=req.side,
                status=OrderStatus.REJECTED, qty=req.qty, price=req.price, broker_order_id="",
                reason_code=BROKER_REJECTED_RANDOM, reason_text="refused by injected fault (reject_fraction)",
                ts_ns=now_ns,
            )
            self._remember_refusal(reply)
            return reply, []
        events = self.engine.submit(
            self.account_id, req.client_order_id, req.code, req.side.value, req.order_type.value, req.qty,
            req.price, now_ns, agent_id=req.agent_id,
        )
        first = events[0]
        assert isinstance(first, OrderUpdate)
        if first.status is OrderStatus.REJECTED:
            reply = order_event_from_update(first)
            self._remember_refusal(reply)
            return reply, []
        self.venue.changed = True
        order = self.engine.order_by_client_id(req.client_order_id)
        assert order is not None
        return order_event_from_order(order), notices(events)

    def cancel(self, req: CancelRequest, now_ns: int) -> tuple[Message, Outbound]:
        """Cancel (part of) an order; returns the reply and the notices it caused."""
        events = self.engine.cancel(req.client_order_id, req.qty, now_ns)
        first = events[0]
        if isinstance(first, CancelRefused):
            order = self.engine.order_by_client_id(req.client_order_id) or self.engine.order_by_broker_id(
                req.client_order_id
            )
            if order is None:
                return _refusal("-", UNKNOWN_ORDER, first.reason_text), []
            reply = order_event_from_order(order).model_copy(update={
                "status": OrderStatus.REJECTED, "reason_code": first.reason_code.value,
                "reason_text": first.reason_text, "ts_ns": now_ns,
            })
            return reply, []
        assert isinstance(first, OrderUpdate)
        self.venue.changed = True
        return order_event_from_update(first), notices(events)

    def _past_order(self, client_order_id: str) -> dict[str, Any] | None:
        """An order of a closed day by client order id (its id carries its date), or None."""
        date = date_of_client_order_id(client_order_id)
        past = self.past_day(date) if date in self.past_dates() else None
        return next((o for o in (past[0] if past else []) if o.get("client_order_id") == client_order_id), None)

    def query(self, cmd: Command, now_ns: int) -> CommandResult:
        """Answer a read-only command."""
        name, args = cmd.name, cmd.args
        engine, account_id = self.engine, self.account_id
        if name in ("ping", "clock"):
            result: Any = {
                "ts_ns": now_ns, "trading_date": self.venue.trading_date, "session": self.venue.session_name(),
                "clock_speed": self.venue.clock_speed, "venue": "paper",
            }
        elif name == "account":
            view = engine.account(account_id)
            assert view is not None
            result = {
                "cash_won": view.cash_won, "buying_power_won": view.buying_power_won,
                "cash_on_hold_won": view.cash_on_hold_won, "fees_won": view.fees_won, "taxes_won": view.taxes_won,
                "equity_won": view.equity_won, "realized_pnl_won": view.realized_pnl_won,
            }
        elif name == "positions":
            result = {c: {"qty": p.qty, "avg_price": p.avg_price} for c, p in engine.positions(account_id).items()}
        elif name == "open_orders":
            result = [order_event_from_order(o).model_dump(mode="json") for o in engine.open_orders(account_id)]
        elif name in ("orders_today", "fills_today"):
            date = args.get("trading_date") or self.venue.trading_date
            if not isinstance(date, str):
                return _refusal(cmd.command_id, BAD_ARGS, f"{name} takes args {{trading_date?: YYYYMMDD}}")
            if date == self.venue.trading_date:
                result = self.day_record()[0 if name == "orders_today" else 1]
            else:  # a day that has closed: what was kept of it (nothing for a day never traded or long gone)
                past = self.past_day(date)
                result = [] if past is None else past[0 if name == "orders_today" else 1]
        elif name == "order_status":
            coid = args.get("client_order_id")
            if not isinstance(coid, str) or not coid:
                return _refusal(cmd.command_id, BAD_ARGS, "order_status needs args {client_order_id: str}")
            order = engine.order_by_client_id(coid)
            result = order_event_from_order(order).model_dump(mode="json") if order else self.rejected.get(coid)
            if result is None:
                result = self._past_order(coid)
        elif name == "quote":
            code = args.get("code")
            if not isinstance(code, str):
                return _refusal(cmd.command_id, BAD_ARGS, "quote needs args {code: str}")
            result = self.venue.quote(code)
            if result is None:
                return _refusal(cmd.command_id, UNKNOWN_CODE, f"{code!r} is not traded here")
        else:
            return _refusal(cmd.command_id, UNKNOWN_COMMAND, f"unknown command {name!r}; try one of {', '.join(QUERIES)}, fault")
        return CommandResult(command_id=cmd.command_id, ok=True, result=result)


def _refusal(command_id: str, reason_code: str, text: str) -> CommandResult:
    return CommandResult(command_id=command_id, ok=False, error=text, reason_code=reason_code)


def unknown_request(msg: Message) -> CommandResult:
    """The answer to a message the exchange does not serve."""
    return _refusal("-", UNKNOWN_REQUEST, f"the exchange does not serve {type(msg).__name__} requests")

