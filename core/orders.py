"""The order state machine: every order's life, idempotent and replayable.

Pure and synchronous: every call takes ``now_ns`` and returns an ``Outcome``
saying what happened (transitions, fills applied, alerts, held notices). The
order-manager process journals ``Outcome.record`` and publishes the changes;
the back-tester calls the same methods on its hot path, so orders are plain
``slots`` dataclasses, never a validated model per event.

Transition table (anything else is refused, counted in ``illegal`` and never
applied; a terminal state never changes)::

    event              from                                  to
    -----------------  ------------------------------------  --------------------------------
    create             (none)                                NEW
    mark_submitted     NEW                                   SUBMITTED
    reject             NEW, SUBMITTED, CANCEL_PENDING(unack) REJECTED
    ack                SUBMITTED                             ACCEPTED
    ack                CANCEL_PENDING (not yet acknowledged) CANCEL_PENDING (now acknowledged)
    fill               ACCEPTED, PARTIALLY_FILLED            PARTIALLY_FILLED | FILLED
    fill               CANCEL_PENDING (acknowledged)         CANCEL_PENDING | FILLED
    request_cancel     NEW                                   CANCELED (it never left the firm)
    request_cancel     SUBMITTED, ACCEPTED, PARTIALLY_FILLED CANCEL_PENDING
    cancel_confirmed   CANCEL_PENDING, ACCEPTED,             CANCELED when nothing remains,
                       PARTIALLY_FILLED (broker-initiated)   else the previous live state
    cancel_rejected    CANCEL_PENDING                        the previous live state
    expire_open        every non-terminal state              EXPIRED (the day roll)

Races and repeats:

- ``create``/``submit`` with a known client order id returns the original
  order, flagged ``duplicate`` (idempotency by client order id).
- A fill with an execution id already applied is a no-op flagged ``duplicate``.
- A fill or cancel notice for an order not yet acknowledged, or for a broker
  order id not yet known (the REST reply vs websocket notice race), is held
  and applied in arrival order as soon as ``ack`` makes the order known.
- A fill beyond what remains of the order (an overfill) is refused and
  reported as an alert.
- Modify is cancel + new: there is no modify event.

``OrderBook.replay(records)`` rebuilds a book from journaled records and gives
the same state as the incremental calls did (crash-only start-up).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from core.messages import (
    CODE_PATTERN,
    INT64_MAX,
    NAME_PATTERN,
    TERMINAL_STATUSES,
    OrderEvent,
    OrderStatus,
    OrderType,
    Side,
    from_checked,
)

NEW = OrderStatus.NEW
SUBMITTED = OrderStatus.SUBMITTED
ACCEPTED = OrderStatus.ACCEPTED
PARTIALLY_FILLED = OrderStatus.PARTIALLY_FILLED
FILLED = OrderStatus.FILLED
CANCEL_PENDING = OrderStatus.CANCEL_PENDING
CANCELED = OrderStatus.CANCELED
REJECTED = OrderStatus.REJECTED
EXPIRED = OrderStatus.EXPIRED

_SIDE_OF: dict[str, Side] = {s.value: s for s in Side}
_ORDER_TYPE_OF: dict[str, OrderType] = {t.value: t for t in OrderType}
_UNACKNOWLEDGED = frozenset({NEW, SUBMITTED})
_FILLABLE = frozenset({ACCEPTED, PARTIALLY_FILLED, CANCEL_PENDING})
_CANCELABLE = frozenset({SUBMITTED, ACCEPTED, PARTIALLY_FILLED})


class Refusal:
    """Reason codes of refused calls and of alerts raised by the order book."""

    ILLEGAL_TRANSITION = "ILLEGAL_TRANSITION"
    UNKNOWN_ORDER = "UNKNOWN_ORDER"
    INVALID_ORDER = "INVALID_ORDER"
    INVALID_QUANTITY = "INVALID_QUANTITY"
    INVALID_PRICE = "INVALID_PRICE"
    INVALID_FILL = "INVALID_FILL"
    OVERFILL = "OVERFILL"
    FILL_ON_TERMINAL_ORDER = "FILL_ON_TERMINAL_ORDER"
    BROKER_ORDER_ID_CONFLICT = "BROKER_ORDER_ID_CONFLICT"
    CANCEL_EXCEEDS_REMAINING = "CANCEL_EXCEEDS_REMAINING"
    HELD_NOTICE_DISCARDED = "HELD_NOTICE_DISCARDED"
    EXPIRED_AT_CLOSE = "EXPIRED_AT_CLOSE"


@dataclass(slots=True)
class Order:
    """One order's current state; money in won, quantities in shares."""

    client_order_id: str
    agent_id: str
    code: str
    side: Side
    order_type: OrderType
    qty: int
    price: int
    status: OrderStatus = NEW
    filled_qty: int = 0
    fill_value_won: int = 0  # sum of qty x price over the fills
    fees_won: int = 0
    taxes_won: int = 0
    canceled_qty: int = 0  # shares taken off the order by confirmed (partial) cancels
    cancel_request_qty: int = 0  # shares asked to cancel while CANCEL_PENDING; 0 = all
    live_status: OrderStatus = NEW  # the state a rejected cancel returns to
    broker_order_id: str = ""
    reason_code: str = ""
    reason_text: str = ""
    created_ns: int = 0
    updated_ns: int = 0
    exec_ids: set[str] = field(default_factory=set)

    @property
    def remaining_qty(self) -> int:
        """Shares still working: neither filled nor canceled (0 once terminal)."""
        if self.status in TERMINAL_STATUSES:
            return 0
        return self.qty - self.filled_qty - self.canceled_qty

    @property
    def avg_fill_price(self) -> int:
        """Average fill price in won, rounded half up (0 before the first fill)."""
        if self.filled_qty == 0:
            return 0
        return (2 * self.fill_value_won + self.filled_qty) // (2 * self.filled_qty)

    @property
    def is_terminal(self) -> bool:
        """Whether the order's state can no longer change."""
        return self.status in TERMINAL_STATUSES

    @property
    def is_acknowledged(self) -> bool:
        """Whether the broker has acknowledged the order (it has a broker order id)."""
        return self.broker_order_id != ""


class Transition(NamedTuple):
    """One change of an order, with the figures the order event needs at that moment.

    An immutable record like the others here, but a NamedTuple: four are made per
    order on the back-tester's path, and a frozen dataclass costs four times as much to build.
    """

    client_order_id: str
    event: str
    from_status: OrderStatus
    to_status: OrderStatus
    filled_qty: int
    remaining_qty: int
    avg_fill_price: int
    ts_ns: int


_new_tuple = tuple.__new__  # a NamedTuple built without its generated __new__ (positional, same fields)


class AppliedFill(NamedTuple):
    """A fill that changed an order (the OMS publishes it as a ``Fill``); a NamedTuple like ``Transition``."""

    exec_id: str
    client_order_id: str
    qty: int
    price: int
    fee_won: int
    tax_won: int
    ts_ns: int


@dataclass(slots=True, frozen=True)
class OrderAlert:
    """Something wrong that a person should see (overfill, conflicting ids, ...)."""

    kind: str
    client_order_id: str
    text: str


@dataclass(slots=True, frozen=True)
class HeldNotice:
    """A fill or cancel notice waiting for its order's acknowledgement."""

    seq: int
    kind: str  # "fill" or "cancel_confirmed"
    client_order_id: str
    broker_order_id: str
    args: tuple[tuple[str, Any], ...]


# Field names of each journal record, in the order the record lists them (after "op").
_RECORD_KEYS: dict[str, tuple[str, ...]] = {
    "create": ("client_order_id", "agent_id", "code", "side", "qty", "price", "now_ns", "order_type"),
    "submit": ("client_order_id", "agent_id", "code", "side", "qty", "price", "now_ns", "order_type"),
    "mark_submitted": ("client_order_id", "now_ns"),
    "reject": ("client_order_id", "reason_code", "reason_text", "now_ns"),
    "ack": ("client_order_id", "broker_order_id", "now_ns"),
    "apply_fill": ("exec_id", "qty", "price", "now_ns", "client_order_id", "broker_order_id", "fee_won", "tax_won"),
    "request_cancel": ("client_order_id", "qty", "now_ns"),
    "cancel_confirmed": ("canceled_qty", "now_ns", "client_order_id", "broker_order_id"),
    "cancel_rejected": ("client_order_id", "reason_code", "reason_text", "now_ns"),
    "expire_open": ("now_ns", "through_date"),
}


class Outcome:
    """What one call did: the record to journal and every consequence.

    ``record`` is built on first read: the order manager journals every one,
    the back-tester reads none, so its hot path never builds the dict.
    """

    __slots__ = ("_op", "_values", "_record", "order", "transitions", "fills", "alerts", "held", "duplicate",
                 "refused", "refused_text")

    def __init__(
        self,
        op: str,
        values: tuple[Any, ...],
        order: Order | None = None,
        *,
        duplicate: bool = False,
        refused: str = "",
        refused_text: str = "",
    ) -> None:
        self._op = op
        self._values = values
        self._record: dict[str, Any] | None = None
        self.order = order
        self.transitions: list[Transition] = []
        self.fills: list[AppliedFill] = []
        self.alerts: list[OrderAlert] = []
        self.held = False
        self.duplicate = duplicate
        self.refused = refused  # a Refusal code when the call changed nothing it asked for
        self.refused_text = refused_text

    @property
    def record(self) -> dict[str, Any]:
        """The journal record of the call: ``{"op": <method>, <argument>: <value>, ...}``."""
        if self._record is None:
            self._record = {"op": self._op, **dict(zip(_RECORD_KEYS[self._op], self._values))}
        return self._record

    @record.setter
    def record(self, record: dict[str, Any]) -> None:
        self._record = record

    def _relabel(self, op: str) -> None:
        """Journal the call as ``op`` (``submit`` is journaled as one record, not create + mark)."""
        self._op = op
        if self._record is not None:
            self._record["op"] = op

    @property
    def ok(self) -> bool:
        """Whether the call was applied (or held, or a harmless duplicate)."""
        return not self.refused

    def __repr__(self) -> str:
        return (f"Outcome(record={self.record!r}, order={self.order!r}, transitions={self.transitions!r}, "
                f"fills={self.fills!r}, alerts={self.alerts!r}, held={self.held!r}, duplicate={self.duplicate!r}, "
                f"refused={self.refused!r}, refused_text={self.refused_text!r})")


class OrderBook:
    """Every order of the firm, by client order id and broker order id."""

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}
        self.by_broker_id: dict[str, str] = {}
        self._open_by_agent: dict[str, dict[str, Order]] = {}
        self.held: list[HeldNotice] = []
        self._held_exec_ids: set[str] = set()
        self._applied_exec_ids: set[str] = set()
        self._held_seq = 0
        self.counters: Counter[str] = Counter()
        self.illegal: Counter[str] = Counter()  # "<event>@<status>" -> count

    # --- queries -----------------------------------------------------------

    def get(self, client_order_id: str) -> Order | None:
        """The order with this client order id, if known."""
        return self.orders.get(client_order_id)

    def by_broker_order_id(self, broker_order_id: str) -> Order | None:
        """The order the broker knows by this id, if acknowledged."""
        coid = self.by_broker_id.get(broker_order_id)
        return self.orders.get(coid) if coid is not None else None

    def open_orders(self, agent_id: str | None = None) -> list[Order]:
        """Orders not yet terminal, of one agent or of all agents."""
        if agent_id is not None:
            return list(self._open_by_agent.get(agent_id, {}).values())
        return [o for per_agent in self._open_by_agent.values() for o in per_agent.values()]

    @property
    def illegal_total(self) -> int:
        """How many illegal transitions were refused so far."""
        return sum(self.illegal.values())

    # --- order entry -------------------------------------------------------

    def create(
        self,
        client_order_id: str,
        agent_id: str,
        code: str,
        side: Side | str,
        qty: int,
        price: int,
        now_ns: int,
        order_type: OrderType | str = OrderType.LIMIT,
    ) -> Outcome:
        """Record a new order in state NEW; a known client order id returns the original."""
        record = (client_order_id, agent_id, code, str(side), qty, price, now_ns, str(order_type))
        existing = self.orders.get(client_order_id)
        if existing is not None:
            self.counters["duplicate_order"] += 1
            return Outcome("create", record, existing, duplicate=True)
        try:
            # a dict lookup first: the enum call costs a microsecond per order on the back-tester's path
            side = (_SIDE_OF.get(side) if isinstance(side, str) else None) or Side(side)
            order_type = (_ORDER_TYPE_OF.get(order_type) if isinstance(order_type, str) else None) or OrderType(order_type)
        except ValueError as exc:
            out = Outcome("create", record, refused=Refusal.INVALID_ORDER, refused_text=f"{client_order_id}: {exc}")
            self.counters["invalid_order"] += 1
            return out
        order = Order(client_order_id, agent_id, code, side, order_type, qty, price,
                      created_ns=now_ns, updated_ns=now_ns)
        self.orders[client_order_id] = order
        per_agent = self._open_by_agent.get(agent_id)
        if per_agent is None:
            per_agent = self._open_by_agent[agent_id] = {}
        per_agent[client_order_id] = order
        self.counters["orders"] += 1
        out = Outcome("create", record, order)
        out.transitions.append(self._snapshot(order, "create", NEW, now_ns))
        problem = _entry_problem(order)
        if problem is not None:
            self._finish(order, REJECTED, "create", now_ns, out, problem[0], problem[1])
        return out

    def mark_submitted(self, client_order_id: str, now_ns: int) -> Outcome:
        """Record that a NEW order was sent to the broker."""
        out = Outcome("mark_submitted", (client_order_id, now_ns))
        order = self._known(client_order_id, out)
        if order is None:
            return out
        if order.status is not NEW:
            return self._illegal(order, "mark_submitted", out)
        self._move(order, SUBMITTED, "mark_submitted", now_ns, out)
        order.live_status = SUBMITTED
        return out

    def submit(
        self,
        client_order_id: str,
        agent_id: str,
        code: str,
        side: Side | str,
        qty: int,
        price: int,
        now_ns: int,
        order_type: OrderType | str = OrderType.LIMIT,
    ) -> Outcome:
        """Create an order and mark it sent in one step (NEW then SUBMITTED)."""
        out = self.create(client_order_id, agent_id, code, side, qty, price, now_ns, order_type)
        if out.duplicate or out.order is None or out.order.status is not NEW:
            out._relabel("submit")
            return out
        sent = self.mark_submitted(client_order_id, now_ns)
        out.transitions.extend(sent.transitions)
        out._relabel("submit")
        return out

    def reject(self, client_order_id: str, reason_code: str, reason_text: str, now_ns: int) -> Outcome:
        """Refuse an order not yet acknowledged (by risk or by the broker), with a reason."""
        out = Outcome("reject", (client_order_id, reason_code, reason_text, now_ns))
        order = self._known(client_order_id, out)
        if order is None:
            return out
        if order.is_terminal or order.is_acknowledged or order.status not in (NEW, SUBMITTED, CANCEL_PENDING):
            return self._illegal(order, "reject", out)
        self._finish(order, REJECTED, "reject", now_ns, out, reason_code, reason_text)
        self._discard_held(client_order_id, out, "order rejected")
        return out

    def ack(self, client_order_id: str, broker_order_id: str, now_ns: int) -> Outcome:
        """Record the broker's acknowledgement and apply the notices held for this order."""
        out = Outcome("ack", (client_order_id, broker_order_id, now_ns))
        order = self._known(client_order_id, out)
        if order is None:
            return out
        if not broker_order_id:
            out.refused, out.refused_text = Refusal.INVALID_FILL, "acknowledgement without a broker order id"
            self.counters["invalid_ack"] += 1
            return out
        if order.is_acknowledged:
            if order.broker_order_id == broker_order_id:
                self.counters["duplicate_ack"] += 1
                out.duplicate = True
                return out
            text = f"acknowledged as {broker_order_id} but known as {order.broker_order_id}"
            out.alerts.append(OrderAlert(Refusal.BROKER_ORDER_ID_CONFLICT, client_order_id, text))
            return self._illegal(order, "ack", out)
        other = self.by_broker_id.get(broker_order_id)
        if other is not None:
            text = f"broker order id {broker_order_id} already belongs to {other}"
            out.alerts.append(OrderAlert(Refusal.BROKER_ORDER_ID_CONFLICT, client_order_id, text))
            return self._illegal(order, "ack", out)
        if order.status is SUBMITTED:
            order.broker_order_id = broker_order_id
            self.by_broker_id[broker_order_id] = client_order_id
            self._move(order, ACCEPTED, "ack", now_ns, out)
            order.live_status = ACCEPTED
        elif order.status is CANCEL_PENDING:
            order.broker_order_id = broker_order_id
            self.by_broker_id[broker_order_id] = client_order_id
            order.live_status = ACCEPTED
            order.updated_ns = now_ns
            out.transitions.append(self._snapshot(order, "ack", CANCEL_PENDING, now_ns))
        else:
            return self._illegal(order, "ack", out)
        self._release_held(order, now_ns, out)
        return out

    # --- executions --------------------------------------------------------

    def apply_fill(
        self,
        exec_id: str,
        qty: int,
        price: int,
        now_ns: int,
        client_order_id: str = "",
        broker_order_id: str = "",
        fee_won: int = 0,
        tax_won: int = 0,
    ) -> Outcome:
        """Apply an execution once, hold it if its order is not yet acknowledged, refuse an overfill."""
        out = Outcome("apply_fill", (exec_id, qty, price, now_ns, client_order_id, broker_order_id, fee_won, tax_won))
        if not exec_id or qty <= 0 or price <= 0 or fee_won < 0 or tax_won < 0 or not (client_order_id or broker_order_id):
            text = f"fill {exec_id!r}: qty {qty}, price {price}, fee {fee_won}, tax {tax_won} (needs an exec id, an order id and positive figures)"
            out.refused, out.refused_text = Refusal.INVALID_FILL, text
            out.alerts.append(OrderAlert(Refusal.INVALID_FILL, client_order_id, text))
            self.counters["invalid_fill"] += 1
            return out
        if exec_id in self._applied_exec_ids or exec_id in self._held_exec_ids:
            self.counters["duplicate_fill"] += 1
            out.duplicate = True
            out.order = self._resolve(client_order_id, broker_order_id)
            return out
        order = self._resolve(client_order_id, broker_order_id)
        if order is None or (not order.is_acknowledged and not order.is_terminal):
            args = (("exec_id", exec_id), ("qty", qty), ("price", price), ("fee_won", fee_won), ("tax_won", tax_won))
            self._hold("fill", client_order_id, broker_order_id, args, out)
            self._held_exec_ids.add(exec_id)
            out.order = order
            return out
        self._fill(order, exec_id, qty, price, fee_won, tax_won, now_ns, out)
        return out

    def _fill(self, order: Order, exec_id: str, qty: int, price: int, fee_won: int, tax_won: int,
              now_ns: int, out: Outcome) -> None:
        out.order = order
        if order.is_terminal:
            text = f"fill {exec_id} of {qty} @ {price} for an order already {order.status}"
            out.alerts.append(OrderAlert(Refusal.FILL_ON_TERMINAL_ORDER, order.client_order_id, text))
            self._illegal(order, "fill", out)
            return
        if order.status not in _FILLABLE:
            self._illegal(order, "fill", out)
            return
        remaining = order.qty - order.filled_qty - order.canceled_qty
        if qty > remaining:
            text = f"fill {exec_id} of {qty} exceeds the {remaining} remaining of {order.qty}"
            out.alerts.append(OrderAlert(Refusal.OVERFILL, order.client_order_id, text))
            out.refused, out.refused_text = Refusal.OVERFILL, text
            self.counters["overfill"] += 1
            return
        self._applied_exec_ids.add(exec_id)
        order.exec_ids.add(exec_id)
        order.filled_qty += qty
        order.fill_value_won += qty * price
        order.fees_won += fee_won
        order.taxes_won += tax_won
        self.counters["fills"] += 1
        out.fills.append(_new_tuple(AppliedFill, (exec_id, order.client_order_id, qty, price, fee_won, tax_won, now_ns)))
        if qty == remaining:
            # the last shares of an order whose rest was canceled (the fill's notice came after the cancel's):
            # it ends canceled, as the broker shows it
            self._finish(order, CANCELED if order.canceled_qty else FILLED, "fill", now_ns, out)
        elif order.status is CANCEL_PENDING:
            order.live_status = PARTIALLY_FILLED
            order.updated_ns = now_ns
            out.transitions.append(self._snapshot(order, "fill", CANCEL_PENDING, now_ns))
        else:
            self._move(order, PARTIALLY_FILLED, "fill", now_ns, out)
            order.live_status = PARTIALLY_FILLED

    # --- cancels -----------------------------------------------------------

    def request_cancel(self, client_order_id: str, qty: int, now_ns: int) -> Outcome:
        """Ask to cancel ``qty`` shares of an open order (0 = all that remains)."""
        out = Outcome("request_cancel", (client_order_id, qty, now_ns))
        order = self._known(client_order_id, out)
        if order is None:
            return out
        if qty < 0:
            out.refused, out.refused_text = Refusal.INVALID_QUANTITY, f"cancel quantity {qty} is negative"
            return out
        if order.status is CANCEL_PENDING:
            self.counters["duplicate_cancel"] += 1
            out.duplicate = True
            return out
        if order.status is NEW:
            order.canceled_qty = order.qty - order.filled_qty
            self._finish(order, CANCELED, "request_cancel", now_ns, out)
            return out
        if order.status not in _CANCELABLE:
            return self._illegal(order, "request_cancel", out)
        order.live_status = order.status
        order.cancel_request_qty = qty
        self._move(order, CANCEL_PENDING, "request_cancel", now_ns, out)
        return out

    def cancel_confirmed(
        self, canceled_qty: int, now_ns: int, client_order_id: str = "", broker_order_id: str = ""
    ) -> Outcome:
        """Apply the broker's cancel confirmation of ``canceled_qty`` shares (0 = all that remains)."""
        out = Outcome("cancel_confirmed", (canceled_qty, now_ns, client_order_id, broker_order_id))
        if canceled_qty < 0 or not (client_order_id or broker_order_id):
            out.refused = Refusal.INVALID_QUANTITY
            out.refused_text = f"cancel confirmation of {canceled_qty} shares for {client_order_id or broker_order_id or 'no order'}"
            return out
        order = self._resolve(client_order_id, broker_order_id)
        if order is None or (not order.is_acknowledged and not order.is_terminal):
            self._hold("cancel_confirmed", client_order_id, broker_order_id, (("canceled_qty", canceled_qty),), out)
            out.order = order
            return out
        self._cancel_confirmed(order, canceled_qty, now_ns, out)
        return out

    def _cancel_confirmed(self, order: Order, canceled_qty: int, now_ns: int, out: Outcome) -> None:
        out.order = order
        if order.status not in _FILLABLE:
            self._illegal(order, "cancel_confirmed", out)
            return
        remaining = order.qty - order.filled_qty - order.canceled_qty
        if canceled_qty > remaining:
            text = f"broker canceled {canceled_qty} but only {remaining} remained; taking {remaining}"
            out.alerts.append(OrderAlert(Refusal.CANCEL_EXCEEDS_REMAINING, order.client_order_id, text))
        take = remaining if canceled_qty == 0 or canceled_qty > remaining else canceled_qty
        order.canceled_qty += take
        order.cancel_request_qty = 0
        if take == remaining:
            self._finish(order, CANCELED, "cancel_confirmed", now_ns, out)
        else:
            self._move(order, order.live_status, "cancel_confirmed", now_ns, out)

    def cancel_rejected(self, client_order_id: str, reason_code: str, reason_text: str, now_ns: int) -> Outcome:
        """The broker refused a cancel: the order goes back to its previous live state."""
        out = Outcome("cancel_rejected", (client_order_id, reason_code, reason_text, now_ns))
        order = self._known(client_order_id, out)
        if order is None:
            return out
        if order.status is not CANCEL_PENDING:
            return self._illegal(order, "cancel_rejected", out)
        order.reason_code, order.reason_text = reason_code, reason_text
        order.cancel_request_qty = 0
        self._move(order, order.live_status, "cancel_rejected", now_ns, out)
        return out

    # --- day roll ----------------------------------------------------------

    def expire_open(self, now_ns: int, through_date: str = "") -> Outcome:
        """Close out every open order at the day roll (KRX cancels day orders overnight).

        ``through_date`` (YYYYMMDD): only orders of that trading date or before
        (the date in their client order id); a roll that comes after the next
        day has begun leaves that day's orders working.
        """
        out = Outcome("expire_open", (now_ns, through_date))
        for order in self.open_orders():
            if through_date and date_of_client_order_id(order.client_order_id) > through_date:
                continue
            self._finish(order, EXPIRED, "expire_open", now_ns, out, Refusal.EXPIRED_AT_CLOSE,
                         "unfilled at the close")
        self._discard_held(None, out, "still held at the day roll")
        return out

    # --- replay ------------------------------------------------------------

    def apply_record(self, record: Mapping[str, Any]) -> Outcome:
        """Re-apply one journaled record (the ``record`` of an earlier ``Outcome``)."""
        args = dict(record)
        op = args.pop("op")
        if op not in _REPLAYABLE:
            raise ValueError(f"unknown order-book record op {op!r}")
        return getattr(self, op)(**args)

    @classmethod
    def replay(cls, records: Iterable[Mapping[str, Any]]) -> OrderBook:
        """A book rebuilt from journaled records: the same state as the incremental calls gave."""
        book = cls()
        for record in records:
            book.apply_record(record)
        return book

    # --- internals ---------------------------------------------------------

    def _known(self, client_order_id: str, out: Outcome) -> Order | None:
        order = self.orders.get(client_order_id)
        if order is None:
            out.refused, out.refused_text = Refusal.UNKNOWN_ORDER, f"no order {client_order_id!r}"
            self.counters["unknown_order"] += 1
        out.order = order
        return order

    def _resolve(self, client_order_id: str, broker_order_id: str) -> Order | None:
        if client_order_id:
            return self.orders.get(client_order_id)
        coid = self.by_broker_id.get(broker_order_id)
        return self.orders.get(coid) if coid is not None else None

    def _illegal(self, order: Order, event: str, out: Outcome) -> Outcome:
        self.illegal[f"{event}@{order.status}"] += 1
        out.refused = Refusal.ILLEGAL_TRANSITION
        out.refused_text = f"{event} is not allowed for {order.client_order_id} in state {order.status}"
        return out

    def _snapshot(self, order: Order, event: str, from_status: OrderStatus, now_ns: int) -> Transition:
        # the two properties inlined and the tuple built directly: four of these are made per back-tested order
        status, filled = order.status, order.filled_qty
        remaining = 0 if status in TERMINAL_STATUSES else order.qty - filled - order.canceled_qty
        avg = (2 * order.fill_value_won + filled) // (2 * filled) if filled else 0
        return _new_tuple(Transition, (order.client_order_id, event, from_status, status, filled, remaining, avg, now_ns))

    def _move(self, order: Order, status: OrderStatus, event: str, now_ns: int, out: Outcome) -> None:
        before = order.status
        order.status = status
        order.updated_ns = now_ns
        out.transitions.append(self._snapshot(order, event, before, now_ns))

    def _finish(self, order: Order, status: OrderStatus, event: str, now_ns: int, out: Outcome,
                reason_code: str = "", reason_text: str = "") -> None:
        if reason_code:
            order.reason_code, order.reason_text = reason_code, reason_text
        self._move(order, status, event, now_ns, out)
        per_agent = self._open_by_agent.get(order.agent_id)
        if per_agent is not None:
            per_agent.pop(order.client_order_id, None)

    def _hold(self, kind: str, client_order_id: str, broker_order_id: str,
              args: tuple[tuple[str, Any], ...], out: Outcome) -> None:
        self._held_seq += 1
        self.held.append(HeldNotice(self._held_seq, kind, client_order_id, broker_order_id, args))
        self.counters["held"] += 1
        out.held = True

    def _release_held(self, order: Order, now_ns: int, out: Outcome) -> None:
        if not self.held:
            return
        coid, boid = order.client_order_id, order.broker_order_id
        mine = [h for h in self.held if h.client_order_id == coid or (h.broker_order_id == boid and not h.client_order_id)]
        if not mine:
            return
        taken = {h.seq for h in mine}
        self.held = [h for h in self.held if h.seq not in taken]
        for notice in mine:  # already in arrival order
            args = dict(notice.args)
            if notice.kind == "fill":
                self._held_exec_ids.discard(args["exec_id"])
                self._fill(order, args["exec_id"], args["qty"], args["price"], args["fee_won"], args["tax_won"], now_ns, out)
            else:
                self._cancel_confirmed(order, args["canceled_qty"], now_ns, out)
            self.counters["released"] += 1
            if out.refused:
                # the acknowledgement itself stands; a held notice that no longer fits is an alert
                if out.refused == Refusal.ILLEGAL_TRANSITION:
                    out.alerts.append(OrderAlert(out.refused, coid, f"held {out.refused_text}"))
                out.refused, out.refused_text = "", ""
        out.order = order

    def _discard_held(self, client_order_id: str | None, out: Outcome, why: str) -> None:
        keep: list[HeldNotice] = []
        for h in self.held:
            if client_order_id is None or h.client_order_id == client_order_id:
                if h.kind == "fill":
                    self._held_exec_ids.discard(dict(h.args)["exec_id"])
                text = f"{h.kind} {dict(h.args)} for {h.client_order_id or h.broker_order_id} discarded: {why}"
                out.alerts.append(OrderAlert(Refusal.HELD_NOTICE_DISCARDED, h.client_order_id, text))
                self.counters["held_discarded"] += 1
            else:
                keep.append(h)
        self.held = keep


_REPLAYABLE = frozenset({
    "create", "submit", "mark_submitted", "reject", "ack", "apply_fill",
    "request_cancel", "cancel_confirmed", "cancel_rejected", "expire_open",
})


def date_of_client_order_id(client_order_id: str) -> str:
    """The trading date written in a client order id ``<agent>-<YYYYMMDD>-<n>`` ("" when it has none)."""
    date = client_order_id.rpartition("-")[0].rpartition("-")[2]
    return date if len(date) == 8 and date.isdigit() else ""


def _entry_problem(order: Order) -> tuple[str, str] | None:
    """Why a new order cannot be worked at all, or None."""
    if not isinstance(order.qty, int) or order.qty <= 0:
        return Refusal.INVALID_QUANTITY, f"quantity {order.qty!r} must be a positive whole number of shares"
    if not isinstance(order.price, int) or order.price < 0:
        return Refusal.INVALID_PRICE, f"price {order.price!r} must be whole won, not negative"
    if order.order_type is OrderType.LIMIT and order.price == 0:
        return Refusal.INVALID_PRICE, "a limit order needs a price"
    return None


_CODE_SYNTAX = re.compile(CODE_PATTERN.removeprefix("^").removesuffix("$"))
_NAME_SYNTAX = re.compile(NAME_PATTERN.removeprefix("^").removesuffix("$"))
_MAX_INT = INT64_MAX


def to_event(order: Order, at: Transition | None = None) -> OrderEvent:
    """The bus message for an order, as it is now or as it was at one transition.

    The book's figures were validated on their way in, so the event is built
    from them without running pydantic's validation again (the order manager
    makes several per order): every field is first checked against the
    constraints of ``OrderEvent`` here, and anything unusual (an order created
    with bad input and refused, say) goes through the validating constructor,
    which gives the same event or the same ValidationError as before.
    """
    if at is None:
        status, filled, remaining, avg, ts = (order.status, order.filled_qty, order.remaining_qty,
                                              order.avg_fill_price, order.updated_ns)
    else:
        status, filled, remaining, avg, ts = at.to_status, at.filled_qty, at.remaining_qty, at.avg_fill_price, at.ts_ns
    coid, agent_id, code, side = order.client_order_id, order.agent_id, order.code, order.side
    qty, price = max(order.qty, 0), max(order.price, 0)
    fields = {
        "client_order_id": coid,
        "agent_id": agent_id,
        "code": code,
        "side": side,
        "status": status,
        "qty": qty,
        "price": price,
        "filled_qty": filled,
        "remaining_qty": remaining,
        "avg_fill_price": avg,
        "broker_order_id": order.broker_order_id,
        "reason_code": order.reason_code,
        "reason_text": order.reason_text,
        "ts_ns": ts,
    }
    if (type(coid) is str and 0 < len(coid) <= 128 and _NAME_SYNTAX.fullmatch(coid) is not None
            and type(agent_id) is str and 0 < len(agent_id) <= 128 and _NAME_SYNTAX.fullmatch(agent_id) is not None
            and type(code) is str and _CODE_SYNTAX.fullmatch(code) is not None
            and type(side) is Side and type(status) is OrderStatus
            and type(qty) is int and type(price) is int and type(filled) is int and type(remaining) is int
            and type(avg) is int and type(ts) is int and 0 <= min(qty, price, filled, remaining, avg, ts)
            and max(qty, price, filled, remaining, avg, ts) <= _MAX_INT and type(order.broker_order_id) is str
            and type(order.reason_code) is str and type(order.reason_text) is str):
        return from_checked(OrderEvent, fields)
    return OrderEvent(**fields)
