"""The order desk: every order's way from an agent's request to the broker and back.

Drives ``core.orders.OrderBook`` (all state transitions, idempotency, exec-id
dedup, held notices, overfill alerts) and journals each step before anything
else happens: an order is in the journal before the broker sees it, and every
event after it. Each journaled change is then published on
``oms.event.<agent_id>`` (OrderEvent, Fill).

The desk talks to the broker through the ``Broker`` interface and to the risk
guard through a callable; sockets, timers and the reconnect policy belong to the
service. Time is passed in (``now_ns``, nanoseconds UTC).
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from core.instruments import Instrument
from core.messages import (
    AlertLevel,
    CancelRequest,
    Fill,
    Message,
    OrderEvent,
    OrderRequest,
    OrderStatus,
    SessionPhase,
)
from core.orders import Order, OrderBook, Outcome, to_event
from services.broker.base import Broker, BrokerError, BrokerUnavailable
from services.order_manager.entry import EntryRefusal, check_order
from services.order_manager.faults import AFTER_BROKER_BEFORE_JOURNAL, AFTER_JOURNAL_BEFORE_BROKER, MID_FILL, FaultPoints
from services.order_manager.journal import Journal, trading_date_of

log = logging.getLogger("order-manager.desk")
IN_FLIGHT_MAX_QUERIES = 3  # status queries of an order or cancel in flight before its absence decides


class DeskReason:
    """Reason codes the order manager gives on its own."""

    RISK_UNAVAILABLE = "RISK_UNAVAILABLE"
    BROKER_DISCONNECTED = "BROKER_DISCONNECTED"
    NEVER_REACHED_BROKER = "NEVER_REACHED_BROKER"
    BROKER_REJECTED = "BROKER_REJECTED"
    ORDER_NOT_OPEN = "ORDER_NOT_OPEN"
    UNKNOWN_ORDER = "UNKNOWN_ORDER"
    NOT_YOUR_ORDER = "NOT_YOUR_ORDER"
    CANCEL_NOT_CONFIRMED = "CANCEL_NOT_CONFIRMED"
    JOURNAL_UNAVAILABLE = "JOURNAL_UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class RiskAnswer:
    """The risk guard's decision on one order."""

    approved: bool
    reason_code: str = ""
    text: str = ""


# Asks the risk guard about an order and returns the function that waits for its answer: the order
# is journaled while the risk guard decides.
RiskCheck = Callable[[OrderRequest], Callable[[], RiskAnswer]]
Publish = Callable[[str, Message], object]
Alert = Callable[[AlertLevel, str, str], None]


class DeskRefusal(Exception):
    """A request the desk cannot serve at all (no order to describe), with a reason code."""

    def __init__(self, reason_code: str, text: str) -> None:
        super().__init__(f"{reason_code}: {text}")
        self.reason_code = reason_code
        self.text = text


class JournalUnavailable(DeskRefusal):
    """A journal write failed: the step did not happen, and the book went back to what the journal holds."""

    def __init__(self, text: str) -> None:
        super().__init__(DeskReason.JOURNAL_UNAVAILABLE, text)


JOURNAL_ALERT = "journal_unavailable"
JOURNAL_RECOVERED_ALERT = "journal_recovered"


class OrderDesk:
    """Order entry, cancels, execution notices and broker reconciliation over one journaled book."""

    def __init__(
        self,
        journal: Journal,
        broker: Broker,
        risk: RiskCheck,
        publish: Publish,
        alert: Alert,
        *,
        agents: Collection[str],
        instruments: Mapping[str, Instrument],
        faults: FaultPoints | None = None,
    ) -> None:
        self.journal = journal
        self.broker = broker
        self.risk = risk
        self.publish = publish
        self.alert = alert
        self.agents = frozenset(agents)
        self.instruments = dict(instruments)
        self.book = OrderBook()
        self.replies: dict[str, str] = {}  # client order id -> JSON of the answer first given
        self.trading_date = ""
        self.phase: SessionPhase | None = None
        self.accepting = False  # new orders go to the broker only while True (CONNECTED and reconciled)
        self.journal_ok = True  # False from a failed journal write until a probe write succeeds and a reconcile ran
        self.chased: Counter[str] = Counter()  # client order id -> status queries of an order or cancel in flight
        self.counters: Counter[str] = Counter()
        self.faults = faults if faults is not None else FaultPoints()

    # --- start-up ------------------------------------------------------------

    def rebuild(self) -> int:
        """Replay the journal into the book (crash-only start-up); returns the records replayed."""
        n = 0
        book = self.book
        for record in self.journal.records():
            book.apply_record(record)
            n += 1
        self.replies = self.journal.replies()
        return n

    # --- order entry -----------------------------------------------------------

    def place(self, req: OrderRequest, now_ns: int) -> OrderEvent:
        """Handle a new order: journal, risk, broker; the answer is ACCEPTED or REJECTED with a reason."""
        known = self.book.get(req.client_order_id)
        if known is not None:
            self.counters["duplicate_request"] += 1
            reply = self.replies.get(req.client_order_id)
            return OrderEvent.model_validate_json(reply) if reply else to_event(known)
        if not self.journal_ok:
            return self._refuse_unjournaled(req, "the journal does not take writes; no order goes out unjournaled",
                                            now_ns)
        refusal = check_order(req, agents=self.agents, instruments=self.instruments, phase=self.phase,
                              trading_date=self.trading_date)
        if refusal is None and not self.accepting:
            refusal = EntryRefusal(DeskReason.BROKER_DISCONNECTED,
                                   "the broker connection is down or being reconciled; try again shortly")
        # The risk guard decides while the order is journaled as submitted: the journal's commit and
        # the risk round trip overlap. A refusal then rejects the submitted order; a crash before the
        # answer leaves it submitted, and the start-up chase finds it never reached the broker.
        risk_answer = self.risk(req) if refusal is None else None
        try:
            if refusal is not None:
                return self._refuse_new(req, refusal, now_ns)
            coid = req.client_order_id
            sent = self.book.submit(coid, req.agent_id, req.code, req.side, req.qty, req.price, now_ns,
                                    req.order_type)
            order = sent.order
            if order is None or order.is_terminal:
                return self._answer([sent], order, coid, now_ns)
            self._commit([sent], now_ns)  # journaled before the broker sees the order
        except JournalUnavailable as exc:
            return self._refuse_unjournaled(req, exc.text, now_ns)
        assert risk_answer is not None
        answer = risk_answer()
        try:
            if not answer.approved:
                reason = answer.reason_code or DeskReason.RISK_UNAVAILABLE
                self.counters[f"rejected:{reason}"] += 1
                return self._answer([self.book.reject(coid, reason, answer.text, now_ns)], order, coid, now_ns)
        except JournalUnavailable:
            journaled = self.book.get(coid)  # submitted in the journal: the chase settles it
            return to_event(journaled) if journaled is not None else self._refuse_unjournaled(
                req, "the journal lost the order's entry", now_ns)
        self.faults.hit(AFTER_JOURNAL_BEFORE_BROKER)
        try:
            return self._send(req, order, now_ns)
        except JournalUnavailable:
            # the order is journaled as SUBMITTED and may be at the broker: the chase settles it by id
            journaled = self.book.get(coid)
            return to_event(journaled) if journaled is not None else self._refuse_unjournaled(
                req, "the journal lost the order's entry", now_ns)

    def _send(self, req: OrderRequest, order: Order, now_ns: int) -> OrderEvent:
        """Send a journaled order to the broker and journal its answer."""
        coid = req.client_order_id
        try:
            answer_event = self.broker.place(req)
        except BrokerUnavailable as exc:
            # unknown whether it arrived: the reconcile asks the broker by client order id
            self._broker_lost(str(exc))
            return to_event(order)
        except BrokerError as exc:
            out = self.book.reject(coid, exc.reason_code or DeskReason.BROKER_REJECTED, exc.text, now_ns)
            return self._answer([out], order, coid, now_ns)
        self.faults.hit(AFTER_BROKER_BEFORE_JOURNAL)
        return self._answer(self._apply_broker_record(order, answer_event, now_ns), order, coid, now_ns)

    def _refuse_unjournaled(self, req: OrderRequest, text: str, now_ns: int) -> OrderEvent:
        """Refuse a new order that cannot be journaled: it never reaches the broker, and the agent is told."""
        self.counters[f"rejected:{DeskReason.JOURNAL_UNAVAILABLE}"] += 1
        event = OrderEvent(client_order_id=req.client_order_id, agent_id=req.agent_id, code=req.code, side=req.side,
                           status=OrderStatus.REJECTED, qty=req.qty, price=req.price, remaining_qty=0,
                           reason_code=DeskReason.JOURNAL_UNAVAILABLE, reason_text=text, ts_ns=now_ns)
        self.publish(f"oms.event.{req.agent_id}", event)  # the risk guard lets go of what it approved
        return event

    def _refuse_new(self, req: OrderRequest, refusal: EntryRefusal, now_ns: int) -> OrderEvent:
        created = self.book.create(req.client_order_id, req.agent_id, req.code, req.side, req.qty, req.price,
                                   now_ns, req.order_type)
        outs = [created]
        if created.order is not None and not created.order.is_terminal:
            outs.append(self.book.reject(req.client_order_id, refusal.reason_code, refusal.text, now_ns))
        self.counters[f"rejected:{refusal.reason_code}"] += 1
        return self._answer(outs, created.order, req.client_order_id, now_ns)

    def _answer(self, outs: list[Outcome], order: Order | None, client_order_id: str, now_ns: int) -> OrderEvent:
        """Journal the last step of an entry together with the answer kept for repeated requests."""
        if order is None:
            raise DeskRefusal(DeskReason.UNKNOWN_ORDER, f"no order {client_order_id!r} after entry")
        event = to_event(order)
        body = event.model_dump_json()
        self.replies[client_order_id] = body
        self._commit(outs, now_ns, {client_order_id: body})
        return event

    # --- cancels -----------------------------------------------------------------

    def cancel(self, req: CancelRequest, now_ns: int) -> OrderEvent:
        """Cancel (part of) an order; cancels skip risk. Raises DeskRefusal for an unknown order."""
        order = self.book.get(req.client_order_id)
        if order is None:
            raise DeskRefusal(DeskReason.UNKNOWN_ORDER, f"no order {req.client_order_id!r}")
        if order.agent_id != req.agent_id:
            return self._cancel_refused(order, DeskReason.NOT_YOUR_ORDER,
                                        f"{req.client_order_id} belongs to {order.agent_id}, not {req.agent_id}", now_ns)
        if order.is_terminal:
            return self._cancel_refused(order, DeskReason.ORDER_NOT_OPEN, f"the order is already {order.status}", now_ns)
        if not self.accepting and order.status is not OrderStatus.NEW:
            return self._cancel_refused(order, DeskReason.BROKER_DISCONNECTED,
                                        "the broker connection is down; the cancel was not sent", now_ns)
        asked = self.book.request_cancel(req.client_order_id, req.qty, now_ns)
        if asked.refused:
            return self._cancel_refused(order, asked.refused, asked.refused_text, now_ns)
        self._commit([asked], now_ns)
        if order.is_terminal or asked.duplicate:
            return to_event(order)
        try:
            answer = self.broker.cancel(req)
        except BrokerUnavailable as exc:
            self._broker_lost(str(exc))
            return to_event(order)
        except BrokerError as exc:
            out = self.book.cancel_rejected(req.client_order_id, exc.reason_code, exc.text, now_ns)
            self._commit([out], now_ns)
            return to_event(order)
        if answer.status is OrderStatus.REJECTED:
            out = self.book.cancel_rejected(req.client_order_id, answer.reason_code, answer.reason_text, now_ns)
            self._commit([out], now_ns)
            ev = to_event(order)
            return ev.model_copy(update={"status": OrderStatus.REJECTED})
        self._commit(self._apply_broker_record(order, answer, now_ns), now_ns)
        return to_event(order)

    def _cancel_refused(self, order: Order, reason_code: str, text: str, now_ns: int) -> OrderEvent:
        """A cancel refusal is the order's record marked REJECTED with the reason (a reply, not an event)."""
        self.counters[f"cancel_refused:{reason_code}"] += 1
        return to_event(order).model_copy(update={"status": OrderStatus.REJECTED, "reason_code": reason_code,
                                                  "reason_text": text, "ts_ns": now_ns})

    def cancel_all(self, agent_id: str | None, now_ns: int) -> list[OrderEvent]:
        """Cancel every open order of one agent (or of every agent)."""
        results = []
        for order in list(self.book.open_orders(agent_id)):
            if order.status is OrderStatus.CANCEL_PENDING:
                continue
            req = CancelRequest(client_order_id=order.client_order_id, agent_id=order.agent_id, ts_ns=now_ns)
            results.append(self.cancel(req, now_ns))
        return results

    # --- execution notices -------------------------------------------------------

    def on_notice(self, msg: Message, now_ns: int) -> None:
        """Apply an execution notice from the broker's feed (OrderEvent or Fill)."""
        if isinstance(msg, Fill):
            if self.book.get(msg.client_order_id) is None:
                self.counters["foreign_notice"] += 1
                return
            self.apply_fill(msg, now_ns)
        elif isinstance(msg, OrderEvent):
            order = self.book.get(msg.client_order_id)
            if order is None:
                self.counters["foreign_notice"] += 1
                return
            self._commit(self._apply_broker_record(order, msg, now_ns), now_ns)

    def apply_fill(self, fill: Fill, now_ns: int) -> Outcome:
        """Apply one execution through the normal path (idempotent by exec id)."""
        out = self.book.apply_fill(fill.exec_id, fill.qty, fill.price, now_ns, fill.client_order_id,
                                   fill.broker_order_id, fill.fee_won, fill.tax_won)
        if out.duplicate and not out.held:
            self.counters["duplicate_fill"] += 1
            return out
        self._commit([out], now_ns, before_commit=lambda: self.faults.hit(MID_FILL))
        return out

    def _apply_broker_record(self, order: Order, rec: OrderEvent, now_ns: int) -> list[Outcome]:
        """Bring an order in line with the broker's record of it (acknowledgement, refusal, cancels)."""
        outs: list[Outcome] = []
        coid = order.client_order_id
        if rec.status is OrderStatus.REJECTED:
            if not order.is_acknowledged and not order.is_terminal:
                outs.append(self.book.reject(coid, rec.reason_code or DeskReason.BROKER_REJECTED,
                                             rec.reason_text or "refused by the broker", now_ns))
            return outs
        if rec.broker_order_id and not order.is_acknowledged and not order.is_terminal:
            if order.status is OrderStatus.NEW:
                outs.append(self.book.mark_submitted(coid, now_ns))
            outs.append(self.book.ack(coid, rec.broker_order_id, now_ns))
        if rec.status is OrderStatus.EXPIRED:
            return outs  # the day roll expires what is still open (the broker sends nothing else for it)
        broker_canceled = rec.qty - rec.filled_qty - rec.remaining_qty
        if rec.status is OrderStatus.CANCELED or broker_canceled > order.canceled_qty:
            more = broker_canceled - order.canceled_qty
            if more > 0 and not order.is_terminal:
                outs.append(self.book.cancel_confirmed(more, now_ns, client_order_id=coid))
        return outs

    # --- reconciliation ----------------------------------------------------------

    def reconcile(self, now_ns: int, max_queries: int = IN_FLIGHT_MAX_QUERIES, trading_date: str = "") -> dict[str, int]:
        """Catch up with the broker: ask about unacknowledged orders by id, apply missed fills, cancels.

        ``trading_date``: a day that has closed (the broker may be on the next
        one by then) whose executions and orders to catch up on; default today.
        Asking counts as one of an order's ``max_queries`` (see ``chase_in_flight``).
        Raises BrokerUnavailable when the broker does not answer.
        """
        summary: Counter[str] = Counter()
        for order in list(self.book.open_orders()):
            if not order.is_acknowledged:
                summary["resolved"] += self._query(order, now_ns, max_queries)
        fills = self.broker.fills_today(trading_date)
        for fill in fills:
            if self.book.get(fill.client_order_id) is None:
                continue
            out = self.apply_fill(fill, now_ns)
            if out.fills:
                summary["fills_applied"] += 1
        records = {r.client_order_id: r for r in self.broker.orders_today(trading_date)}
        for order in list(self.book.open_orders()):
            rec = records.get(order.client_order_id)
            if rec is None:
                continue
            outs = self._apply_broker_record(order, rec, now_ns)
            if order.status is OrderStatus.CANCEL_PENDING and rec.status not in (OrderStatus.CANCELED, OrderStatus.EXPIRED) and rec.remaining_qty > 0:
                outs.append(self.book.cancel_rejected(order.client_order_id, DeskReason.CANCEL_NOT_CONFIRMED,
                                                      "the broker still shows the order open; cancel again", now_ns))
            if outs:
                summary["orders_updated"] += 1
                self._commit(outs, now_ns)
        summary["broker_fills"] = len(fills)
        summary["broker_orders"] = len(records)
        return dict(summary)

    def resolve(self, client_order_id: str, now_ns: int) -> int:
        """Ask the broker for one order by client order id and apply its record; 1 if the order changed."""
        order = self.book.get(client_order_id)
        if order is None:
            raise DeskRefusal(DeskReason.UNKNOWN_ORDER, f"no order {client_order_id!r}")
        rec = self.broker.order_status(client_order_id)
        if rec is None:
            if order.is_acknowledged or order.is_terminal:
                return 0
            out = self.book.reject(client_order_id, DeskReason.NEVER_REACHED_BROKER,
                                   "the broker has no record of the order", now_ns)
            self._commit([out], now_ns)
            return 1
        outs = self._apply_broker_record(order, rec, now_ns)
        self._commit(outs, now_ns)
        return 1 if any(o.transitions for o in outs) else 0

    def chase_in_flight(self, now_ns: int, older_than_ns: int, max_queries: int = IN_FLIGHT_MAX_QUERIES) -> int:
        """Query the broker about orders and cancels left without an answer for longer than ``older_than_ns``.

        An order sent but unacknowledged, or a cancel sent but unconfirmed, is
        asked about by client order id at most ``max_queries`` times; the
        broker's record is applied as soon as there is one. Only the last
        answer may decide by absence: an order the broker never saw is
        REJECTED as NEVER_REACHED_BROKER, a cancel the broker still shows open
        is refused as CANCEL_NOT_CONFIRMED (the order stays open, the agent may
        cancel again). Nothing is guessed. Returns the orders that changed;
        raises BrokerUnavailable when the broker is silent.
        """
        changed = 0
        for order in list(self.book.open_orders()):
            in_flight = not order.is_acknowledged or order.status is OrderStatus.CANCEL_PENDING
            if in_flight and now_ns - order.updated_ns >= older_than_ns:
                changed += self._query(order, now_ns, max_queries)
        return changed

    def _query(self, order: Order, now_ns: int, max_queries: int) -> int:
        """One status query of an order in flight; 1 if the order changed."""
        coid = order.client_order_id
        self.chased[coid] += 1
        last = self.chased[coid] >= max_queries
        rec = self.broker.order_status(coid)
        outs: list[Outcome] = []
        if rec is None:
            if last and not order.is_acknowledged and not order.is_terminal:
                self.counters["never_reached_broker"] += 1
                outs.append(self.book.reject(coid, DeskReason.NEVER_REACHED_BROKER,
                                             f"the broker has no record of the order after {self.chased[coid]} "
                                             "queries", now_ns))
        else:
            outs = self._apply_broker_record(order, rec, now_ns)
            still_open = rec.status not in (OrderStatus.CANCELED, OrderStatus.EXPIRED) and rec.remaining_qty > 0
            if last and order.status is OrderStatus.CANCEL_PENDING and still_open:
                outs.append(self.book.cancel_rejected(coid, DeskReason.CANCEL_NOT_CONFIRMED,
                                                      "the broker still shows the order open; cancel again", now_ns))
        self._commit(outs, now_ns)
        if last or order.is_terminal or (order.is_acknowledged and order.status is not OrderStatus.CANCEL_PENDING):
            del self.chased[coid]  # settled (or given up on): a later cancel starts a fresh count
        return 1 if any(o.transitions for o in outs) else 0

    # --- the day -----------------------------------------------------------------

    def on_session(self, phase: SessionPhase, trading_date: str) -> None:
        """Follow the market's session phase and trading date."""
        self.phase = phase
        if trading_date:
            self.trading_date = trading_date

    def expire_open(self, now_ns: int, through_date: str = "") -> int:
        """The day roll: every open order (of ``through_date`` or before) becomes EXPIRED."""
        out = self.book.expire_open(now_ns, through_date)
        if out.transitions or out.alerts:
            self._commit([out], now_ns)
        return len(out.transitions)

    def stale_open_orders(self) -> list[Order]:
        """Open orders of an earlier trading day than the current one."""
        if not self.trading_date:
            return []
        return [o for o in self.book.open_orders()
                if trading_date_of(o.client_order_id, self.trading_date) < self.trading_date]

    # --- internals -----------------------------------------------------------------

    def _commit(self, outs: list[Outcome], now_ns: int, replies: dict[str, str] | None = None,
                before_commit: Callable[[], None] | None = None) -> None:
        """Journal the step in one transaction, then publish its events, fills and alerts."""
        if not outs and not replies:
            return
        try:
            self.journal.write(outs, self.book.orders, self.trading_date, replies, before_commit=before_commit)
        except sqlite3.Error as exc:
            self._journal_lost(str(exc))
            raise JournalUnavailable(f"the journal refused a write: {exc}") from exc
        orders = self.book.orders
        for out in outs:
            for t in out.transitions:
                order = orders[t.client_order_id]
                self.publish(f"oms.event.{order.agent_id}", to_event(order, t))
            for f in out.fills:
                order = orders[f.client_order_id]
                self.publish(f"oms.event.{order.agent_id}", Fill(
                    exec_id=f.exec_id, client_order_id=f.client_order_id, agent_id=order.agent_id, code=order.code,
                    side=order.side, qty=f.qty, price=f.price, fee_won=f.fee_won, tax_won=f.tax_won,
                    broker_order_id=order.broker_order_id, ts_ns=f.ts_ns))
            for a in out.alerts:
                self.alert(AlertLevel.ERROR, a.kind, f"{a.client_order_id}: {a.text}")

    def _journal_lost(self, text: str) -> None:
        """A write failed: the book goes back to what the journal holds, and new orders stop until it recovers."""
        first = self.journal_ok
        self.journal_ok = False
        self.counters["journal_failures"] += 1
        self.book = OrderBook()
        self.rebuild()
        if first:
            log.error("journal write failed: %s", text)
            self.alert(AlertLevel.CRITICAL, JOURNAL_ALERT,
                       f"the journal refused a write ({text}); new orders are refused with "
                       f"{DeskReason.JOURNAL_UNAVAILABLE} until it takes writes again")

    def recover_journal(self, now_ns: int) -> bool:
        """Probe the journal with a write; when it takes it, catch up with the broker and accept orders again.

        Raises BrokerUnavailable when the broker does not answer the catch-up
        (the connection's own reconcile then runs it); returns False while the
        journal still refuses writes.
        """
        try:
            self.journal.write_alert(self.trading_date, now_ns, JOURNAL_RECOVERED_ALERT,
                                     "the journal takes writes again")
        except sqlite3.Error:
            return False
        self.journal_ok = True
        summary = self.reconcile(now_ns)  # what the failed writes dropped, the broker still knows
        self.alert(AlertLevel.INFO, JOURNAL_RECOVERED_ALERT,
                   f"the journal takes writes again; caught up with the broker: {summary}")
        return self.journal_ok

    def _broker_lost(self, text: str) -> None:
        if self.accepting:
            self.accepting = False
            log.warning("broker unavailable: %s", text)


_EVENT_FIELDS = ("client_order_id", "agent_id", "code", "side", "status", "qty", "price", "filled_qty",
                 "remaining_qty", "avg_fill_price", "broker_order_id", "reason_code", "reason_text")
_FILL_FIELDS = ("exec_id", "client_order_id", "agent_id", "code", "side", "qty", "price", "fee_won", "tax_won",
                "broker_order_id", "ts_ns")


def order_row_as_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """A journal order row in the shape of an ``OrderEvent`` dict (``ts_ns`` = last update)."""
    out = {k: row[k] for k in _EVENT_FIELDS}
    out["ts_ns"] = row["updated_ns"]
    return out


def fill_row_as_fill(row: Mapping[str, Any]) -> dict[str, Any]:
    """A journal fill row in the shape of a ``Fill`` dict."""
    return {k: row[k] for k in _FILL_FIELDS}
