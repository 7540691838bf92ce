"""The gateway's order book: which KIS order is which firm order, and what the firm has been told of it.

Pure (time passed in, no I/O): the service journals every change it returns
(``KisBook.dirty``) before the reply or notice that reports it goes out.

KIS knows no client order id. An order is registered (``SENDING``) before its
request leaves; the reply gives KIS's order number (ODNO), branch and order
time (``ACCEPTED``), or a refusal (``REJECTED``). A reply that never comes
leaves the order ``UNKNOWN``: it is never sent again, but looked for in
KIS's daily orders by code, side, quantity, price and time window
(``resolve``): one candidate no other order has claimed is adopted; none,
after ``NEVER_ARRIVED_AFTER_NS`` of looking, means it never arrived
(REJECTED ``NEVER_REACHED_BROKER``); more than one is ``AMBIGUOUS``, flagged
to the operator, and the code is reduce-only until someone resolves it.

Executions: a fill's execution id is derived from the order number and the
cumulative filled quantity it brings the order to (``exec_id``), so the same
fill seen from a notice and from the daily orders is one fill. A notice for
an order number the book does not know yet (it beat the REST reply) is kept
by number for ``NOTICE_BUFFER_NS`` and applied once the reply lands.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

from core.costs import DEFAULT_COSTS, CostModel
from core.messages import Fill, Message, OrderEvent, OrderStatus, Side
from core.venue import EXEC_EVENT_TOPIC, EXEC_FILL_TOPIC
from services.kis_gateway.wire import norm_odno

SENDING, ACCEPTED, REJECTED, UNKNOWN, AMBIGUOUS = "sending", "accepted", "rejected", "unknown", "ambiguous"
IN_DOUBT = (SENDING, UNKNOWN, AMBIGUOUS)
NOTICE_BUFFER_NS = 300 * 1_000_000_000  # a notice that beat its REST reply waits this long for it
NEVER_ARRIVED_AFTER_NS = 20 * 1_000_000_000  # looked for this long in the daily orders without a candidate
# A candidate's KIS order time must fall within this window around the moment the request left, in wall
# seconds (times the market clock's speed when rehearsing on a fast clock). Generous both ways: KIS's clock and
# ours are not the same clock (the demo server's runs ahead at times), and a window too narrow would call an
# order that arrived "never arrived"; one too wide can only make a match ambiguous, which is flagged, not guessed.
MATCH_BEFORE_S = 30
MATCH_AFTER_S = 120
NEVER_REACHED_BROKER = "NEVER_REACHED_BROKER"

Outbound = list[tuple[str, Message]]


def exec_id(trading_date: str, odno: str, cumulative_qty: int) -> str:
    """The execution id of the fill that brings order ``odno`` of a day to ``cumulative_qty`` shares."""
    return f"K{trading_date}-{norm_odno(odno)}-{cumulative_qty}"


class NoticeLike(Protocol):
    """What the book reads of an execution notice (``services.kis_gateway.notices.NoticeRecord``)."""

    odno: str
    orig_odno: str
    rctf_cls: str
    qty: int
    price: int
    hhmmss: str
    refused: bool
    is_fill: bool
    accepted: str


class DailyLike(Protocol):
    """What the book reads of a row of inquire-daily-ccld (``services.kis_gateway.wire.DailyOrder``)."""

    ord_dt: str
    odno: str
    orgn_odno: str
    code: str
    side: str
    qty: int
    price: int
    ord_tmd: str
    filled_qty: int
    filled_value_won: int
    avg_price: int
    canceled: bool
    remaining_qty: int
    rejected_qty: int


@dataclass(slots=True)
class KisOrder:
    """One firm order at KIS."""

    client_order_id: str
    agent_id: str
    code: str
    side: str
    order_type: str
    qty: int
    price: int
    trading_date: str
    sent_ns: int  # market time the request left (KIS's order times are market times)
    state: str = SENDING
    odno: str = ""  # without padding
    branch: str = ""
    ord_tmd: str = ""
    filled_qty: int = 0
    filled_won: int = 0
    fees_won: int = 0
    taxes_won: int = 0
    canceled_qty: int = 0
    cancel_pending_qty: int = 0
    reason_code: str = ""
    reason_text: str = ""
    updated_ns: int = 0
    looked_since_ns: int = 0  # when the search for an UNKNOWN order began (the service's monotonic clock)
    caught_up_qty: int = 0  # shares booked from the daily orders that no notice has accounted for since

    @property
    def open_qty(self) -> int:
        return max(0, self.qty - self.filled_qty - self.canceled_qty) if self.state == ACCEPTED else 0

    @property
    def status(self) -> OrderStatus:
        if self.state == REJECTED:
            return OrderStatus.REJECTED
        if self.state in IN_DOUBT:
            return OrderStatus.SUBMITTED
        if self.filled_qty >= self.qty:
            return OrderStatus.FILLED
        if self.filled_qty + self.canceled_qty >= self.qty:
            return OrderStatus.CANCELED
        if self.cancel_pending_qty:
            return OrderStatus.CANCEL_PENDING
        return OrderStatus.PARTIALLY_FILLED if self.filled_qty else OrderStatus.ACCEPTED

    def event(self, ts_ns: int) -> OrderEvent:
        """The order as the venue protocol tells it."""
        avg = (self.filled_won + self.filled_qty // 2) // self.filled_qty if self.filled_qty else 0
        return OrderEvent(
            client_order_id=self.client_order_id, agent_id=self.agent_id, code=self.code, side=Side(self.side),
            status=self.status, qty=self.qty, price=self.price, filled_qty=self.filled_qty,
            remaining_qty=self.open_qty if self.state == ACCEPTED else (0 if self.state == REJECTED else self.qty),
            avg_fill_price=avg, broker_order_id=self.odno if self.state == ACCEPTED else "",
            reason_code=self.reason_code, reason_text=self.reason_text, ts_ns=ts_ns,
        )


ORDER_FIELDS = tuple(f.name for f in fields(KisOrder))


@dataclass(slots=True)
class KisFill:
    """One execution the firm was told of."""

    exec_id: str
    client_order_id: str
    qty: int
    price: int
    fee_won: int
    tax_won: int
    ts_ns: int
    source: str  # "notice" or "daily"


FILL_FIELDS = tuple(f.name for f in fields(KisFill))


@dataclass(slots=True)
class _Buffered:
    notice: Any
    at_ns: int


@dataclass
class KisBook:
    """Every firm order at KIS of the days kept, by client order id and by order number."""

    costs: CostModel = DEFAULT_COSTS
    orders: dict[str, KisOrder] = field(default_factory=dict)
    fills: dict[str, KisFill] = field(default_factory=dict)
    by_odno: dict[tuple[str, str], str] = field(default_factory=dict)  # (date, odno) -> client order id
    cancel_odnos: dict[tuple[str, str], str] = field(default_factory=dict)  # (date, cancel odno) -> client order id
    buffered: dict[str, list[_Buffered]] = field(default_factory=dict)  # odno -> notices waiting for their reply
    dirty_orders: set[str] = field(default_factory=set)
    dirty_fills: list[KisFill] = field(default_factory=list)
    alerts: list[tuple[str, str]] = field(default_factory=list)  # (kind, text) for the operator
    seen_notices: set[tuple[Any, ...]] = field(default_factory=set)
    daily_check_due: bool = False  # a fill notice needs the daily orders to tell whether it is new (``on_notice``)
    clock_speed: float = 1.0  # market seconds per wall second (the service sets it; KIS's own market: 1)
    wall_ns: int = 0  # the service's monotonic clock, set before each call: timers run on it, not on market time

    # --- persistence ---------------------------------------------------------------------

    def restore(self, orders: list[dict[str, Any]], fills: list[dict[str, Any]],
                cancels: list[tuple[str, str, str]]) -> None:
        for row in orders:
            o = KisOrder(**{k: row[k] for k in ORDER_FIELDS})
            if o.state in (SENDING, UNKNOWN):  # sent (maybe) before a crash: look for it from now on
                o.state, o.looked_since_ns = UNKNOWN, self.wall_ns
                o.reason_code, o.reason_text = "FATE_UNKNOWN", o.reason_text or "the gateway stopped while sending it"
            self.orders[o.client_order_id] = o
            if o.odno:
                self.by_odno[(o.trading_date, o.odno)] = o.client_order_id
        for row in fills:
            f = KisFill(**{k: row[k] for k in FILL_FIELDS})
            self.fills[f.exec_id] = f
        for date, odno, coid in cancels:
            self.cancel_odnos[(date, odno)] = coid

    def take_dirty(self) -> tuple[list[KisOrder], list[KisFill]]:
        orders = [self.orders[c] for c in sorted(self.dirty_orders) if c in self.orders]
        fills, self.dirty_fills = self.dirty_fills, []
        self.dirty_orders.clear()
        return orders, fills

    def _touch(self, order: KisOrder, now_ns: int) -> None:
        order.updated_ns = now_ns
        self.dirty_orders.add(order.client_order_id)

    # --- orders out ------------------------------------------------------------------------

    def register(self, client_order_id: str, agent_id: str, code: str, side: str, order_type: str, qty: int,
                 price: int, trading_date: str, now_ns: int) -> KisOrder:
        """A new order about to be sent (journaled before the request leaves)."""
        if client_order_id in self.orders:
            raise ValueError(f"order {client_order_id} is known already")
        order = KisOrder(client_order_id, agent_id, code, side, order_type, qty, price, trading_date, now_ns)
        self.orders[client_order_id] = order
        self._touch(order, now_ns)
        return order

    def accepted(self, client_order_id: str, odno: str, branch: str, ord_tmd: str, now_ns: int) -> Outbound:
        """KIS took the order: its number; then whatever notices of it arrived first."""
        order = self.orders[client_order_id]
        odno = norm_odno(odno)
        claimed = self.by_odno.get((order.trading_date, odno))
        if claimed and claimed != client_order_id:
            self.alerts.append(("kis_order_number_reused", f"KIS order number {odno} is {claimed}'s and now "
                                                           f"{client_order_id}'s too; the first keeps it"))
            return []
        order.state, order.odno, order.branch, order.ord_tmd = ACCEPTED, odno, branch, ord_tmd
        order.reason_code = order.reason_text = ""
        self.by_odno[(order.trading_date, odno)] = client_order_id
        self._touch(order, now_ns)
        out: Outbound = [(EXEC_EVENT_TOPIC, order.event(now_ns))]
        for b in self.buffered.pop(odno, []):
            out += self.on_notice(b.notice, order.trading_date, now_ns)
        return out

    def rejected(self, client_order_id: str, reason_code: str, text: str, now_ns: int) -> None:
        order = self.orders[client_order_id]
        order.state, order.reason_code, order.reason_text = REJECTED, reason_code, text
        self._touch(order, now_ns)

    def unknown(self, client_order_id: str, why: str, now_ns: int) -> None:
        """The reply never came: the order's fate is unknown until the daily orders tell it."""
        order = self.orders[client_order_id]
        order.state, order.reason_code, order.reason_text = UNKNOWN, "FATE_UNKNOWN", why
        order.looked_since_ns = self.wall_ns
        self._touch(order, now_ns)

    def cancel_sent(self, client_order_id: str, qty: int, now_ns: int) -> None:
        order = self.orders[client_order_id]
        order.cancel_pending_qty = qty or order.open_qty
        self._touch(order, now_ns)

    def cancel_done(self, client_order_id: str, cancel_odno: str, qty: int, now_ns: int) -> Outbound:
        """KIS took the cancel (its own order number): the shares it moved are canceled."""
        order = self.orders[client_order_id]
        self.cancel_odnos[(order.trading_date, norm_odno(cancel_odno))] = client_order_id
        return self._canceled(order, qty or order.cancel_pending_qty or order.open_qty, now_ns)

    def cancel_failed(self, client_order_id: str, now_ns: int) -> None:
        order = self.orders[client_order_id]
        order.cancel_pending_qty = 0
        self._touch(order, now_ns)

    def _canceled(self, order: KisOrder, qty: int, now_ns: int) -> Outbound:
        qty = min(qty, max(0, order.qty - order.filled_qty - order.canceled_qty))
        order.cancel_pending_qty = 0
        if qty <= 0:
            self._touch(order, now_ns)
            return []
        order.canceled_qty += qty
        self._touch(order, now_ns)
        return [(EXEC_EVENT_TOPIC, order.event(now_ns))]

    # --- notices -------------------------------------------------------------------------------

    def on_notice(self, n: NoticeLike, trading_date: str, now_ns: int) -> Outbound:
        """An execution notice: a fill, a cancel confirmation, a refusal (or kept for its reply).

        KIS gives a notice no id: one seen before (same order, kind, time, quantity and
        price) is dropped. Two real partial fills alike in all of these lose the second
        here; the daily orders' cumulative quantity brings it back (``on_daily``).
        """
        key = (trading_date, n.odno, n.is_fill, n.accepted, n.hhmmss, n.qty, n.price, n.rctf_cls)
        if key in self.seen_notices:
            return []
        odno = norm_odno(n.odno)
        if n.rctf_cls == "2" and not n.is_fill or (trading_date, odno) in self.by_odno:
            self.seen_notices.add(key)  # applied now (a notice kept for its reply is applied, and seen, later)
        if n.rctf_cls == "2" and not n.is_fill:  # a cancel order's confirmation
            coid = self.cancel_odnos.get((trading_date, odno)) or self.by_odno.get(
                (trading_date, norm_odno(n.orig_odno)))
            order = self.orders.get(coid or "")
            if order is None:
                return []
            if (trading_date, odno) in self.cancel_odnos:
                return []  # the cancel's own reply booked it already
            self.cancel_odnos[(trading_date, odno)] = order.client_order_id
            return self._canceled(order, n.qty, now_ns)
        coid = self.by_odno.get((trading_date, odno))
        if coid is None:
            self.buffered.setdefault(odno, []).append(_Buffered(n, self.wall_ns))
            return []
        order = self.orders[coid]
        if n.is_fill:
            if order.caught_up_qty > 0:
                # executions booked from the daily orders had no notice: this one may be one of them arriving
                # late, or a new execution. KIS's cumulative quantity tells which, so the daily orders are read
                # again and it books what is new; the notice itself books nothing.
                order.caught_up_qty = max(0, order.caught_up_qty - n.qty)
                self.daily_check_due = True
                self._touch(order, order.updated_ns)
                return []
            return self._fill(order, n.qty, n.price, now_ns, "notice", order.filled_qty + n.qty)
        if n.refused and order.state != REJECTED and not order.filled_qty:
            order.state, order.reason_code, order.reason_text = REJECTED, "BROKER_REJECTED", "KIS refused the order"
            self._touch(order, now_ns)
            return [(EXEC_EVENT_TOPIC, order.event(now_ns))]
        if n.accepted == "3":  # IOC / FOK remainder canceled by the exchange
            return self._canceled(order, n.qty, now_ns)
        return []

    def expire_buffer(self) -> list[str]:
        """Drop notices that waited too long for their reply; their order numbers (for the log)."""
        gone = []
        for odno in list(self.buffered):
            kept = [b for b in self.buffered[odno] if self.wall_ns - b.at_ns < NOTICE_BUFFER_NS]
            if kept:
                self.buffered[odno] = kept
            else:
                del self.buffered[odno]
                gone.append(odno)
        return gone

    def _fill(self, order: KisOrder, qty: int, price: int, now_ns: int, source: str, cumulative: int) -> Outbound:
        if qty <= 0 or price <= 0 or cumulative <= order.filled_qty or cumulative > order.qty:
            return []  # seen already (a notice after the daily orders caught up), or impossible
        eid = exec_id(order.trading_date, order.odno, cumulative)
        if eid in self.fills:
            return []
        fee, tax = self.costs.order_fill_costs(order.side, order.filled_won, qty * price,
                                               dt.datetime.strptime(order.trading_date, "%Y%m%d").date())
        f = KisFill(eid, order.client_order_id, qty, price, fee, tax, now_ns, source)
        self.fills[eid] = f
        self.dirty_fills.append(f)
        order.filled_qty = cumulative
        order.filled_won += qty * price
        order.fees_won += fee
        order.taxes_won += tax
        self._touch(order, now_ns)
        return [(EXEC_FILL_TOPIC, self.fill_message(f)), (EXEC_EVENT_TOPIC, order.event(now_ns))]

    def _catch_up(self, order: KisOrder, filled_qty: int, filled_won: int, now_ns: int) -> Outbound:
        """Book the executions KIS's daily orders show and no notice brought: the amount to the won.

        Their notices may still come (late): ``caught_up_qty`` remembers them, so that
        a notice after a catch-up is checked against the daily orders, not booked again.
        The missed executions may have had several prices; the daily orders give only
        their total. They are booked as at most two fills, at the average price
        rounded down and one won above it, so that the order's filled amount (and so
        the cash and the costs) is KIS's to the won.
        """
        missing, amount = filled_qty - order.filled_qty, filled_won - order.filled_won
        if missing <= 0 or amount < missing:
            return []
        order.caught_up_qty += missing
        low = amount // missing
        at_high = amount - low * missing  # executions at low + 1 that make up the rest
        out: Outbound = []
        if missing - at_high:
            out += self._fill(order, missing - at_high, low, now_ns, "daily", order.filled_qty + missing - at_high)
        if at_high:
            out += self._fill(order, at_high, low + 1, now_ns, "daily", filled_qty)
        return out

    def fill_message(self, f: KisFill) -> Fill:
        order = self.orders[f.client_order_id]
        return Fill(exec_id=f.exec_id, client_order_id=f.client_order_id, agent_id=order.agent_id, code=order.code,
                    side=Side(order.side), qty=f.qty, price=f.price, fee_won=f.fee_won, tax_won=f.tax_won,
                    broker_order_id=order.odno, ts_ns=f.ts_ns)

    # --- the daily orders: catch-up and resolution ------------------------------------------

    def on_daily(self, rows: list[DailyLike], trading_date: str, now_ns: int) -> Outbound:
        """Bring the book in line with KIS's daily orders of ``trading_date``: unknowns, missed fills, cancels."""
        out: Outbound = []
        mine = [r for r in rows if r.ord_dt == trading_date]
        out += self.resolve(mine, trading_date, now_ns)
        for r in mine:
            odno = norm_odno(r.odno)
            coid = self.by_odno.get((trading_date, odno))
            if coid is not None:
                order = self.orders[coid]
                if r.filled_qty > order.filled_qty:
                    total = r.filled_value_won or r.avg_price * r.filled_qty
                    out += self._catch_up(order, r.filled_qty, total, now_ns)
                broker_canceled = max(0, r.qty - r.filled_qty - r.remaining_qty - r.rejected_qty)
                if r.rejected_qty and not order.filled_qty and r.rejected_qty >= r.qty and order.state != REJECTED:
                    order.state, order.reason_code, order.reason_text = REJECTED, "BROKER_REJECTED", \
                        "KIS shows the order refused"
                    self._touch(order, now_ns)
                    out.append((EXEC_EVENT_TOPIC, order.event(now_ns)))
                elif broker_canceled > order.canceled_qty:
                    out += self._canceled(order, broker_canceled - order.canceled_qty, now_ns)
            elif r.orgn_odno and norm_odno(r.orgn_odno) != "0":
                target = self.by_odno.get((trading_date, norm_odno(r.orgn_odno)))
                if target is not None:
                    self.cancel_odnos.setdefault((trading_date, odno), target)
        return out

    def resolve(self, rows: list[DailyLike], trading_date: str, now_ns: int) -> Outbound:
        """Look for each order of unknown fate among the daily orders; adopt, refuse or flag it."""
        out: Outbound = []
        claimed = {odno for (date, odno) in self.by_odno if date == trading_date}
        claimed |= {odno for (date, odno) in self.cancel_odnos if date == trading_date}
        for order in [o for o in self.orders.values() if o.state in (UNKNOWN, AMBIGUOUS)
                      and o.trading_date == trading_date]:
            candidates = [r for r in rows if norm_odno(r.odno) not in claimed and _matches(order, r, self.clock_speed)]
            if len(candidates) == 1:
                r = candidates[0]
                was = order.state
                out += self.accepted(order.client_order_id, r.odno, "", r.ord_tmd, now_ns)
                claimed.add(norm_odno(r.odno))
                if was == AMBIGUOUS:
                    self.alerts.append(("kis_order_resolved", f"{order.client_order_id} is KIS order {r.odno}"))
            elif not candidates and order.state == UNKNOWN and \
                    self.wall_ns - order.looked_since_ns >= NEVER_ARRIVED_AFTER_NS:
                self.rejected(order.client_order_id, NEVER_REACHED_BROKER,
                              "the order is not among KIS's daily orders: it never arrived", now_ns)
                out.append((EXEC_EVENT_TOPIC, order.event(now_ns)))
            elif len(candidates) > 1 and order.state != AMBIGUOUS:
                order.state = AMBIGUOUS
                order.reason_code, order.reason_text = "AMBIGUOUS", (
                    f"{len(candidates)} KIS orders ({', '.join(norm_odno(c.odno) for c in candidates)}) match it")
                self._touch(order, now_ns)
                self.alerts.append(("kis_order_ambiguous", f"{order.client_order_id} ({order.side} {order.qty} "
                                                           f"{order.code} @ {order.price}): {order.reason_text}; "
                                                           f"{order.code} is reduce-only until it is resolved"))
        return out

    def adopt(self, client_order_id: str, odno: str, now_ns: int) -> Outbound:
        """The operator says which KIS order an ambiguous order is."""
        order = self.orders[client_order_id]
        if order.state not in (UNKNOWN, AMBIGUOUS):
            raise ValueError(f"{client_order_id} is {order.state}, not of unknown fate")
        return self.accepted(client_order_id, odno, "", "", now_ns)

    # --- views ---------------------------------------------------------------------------

    def reduce_only_codes(self) -> set[str]:
        """Codes with an order the gateway cannot tell apart: no new buying there until it is resolved."""
        return {o.code for o in self.orders.values() if o.state == AMBIGUOUS}

    def in_doubt(self) -> list[KisOrder]:
        return [o for o in self.orders.values() if o.state in IN_DOUBT]

    def of_day(self, trading_date: str) -> list[KisOrder]:
        return [o for o in self.orders.values() if o.trading_date == trading_date]

    def fills_of_day(self, trading_date: str) -> list[Fill]:
        return [self.fill_message(f) for f in self.fills.values()
                if self.orders[f.client_order_id].trading_date == trading_date]

    def open(self) -> list[KisOrder]:
        return [o for o in self.orders.values() if o.state == ACCEPTED and o.open_qty > 0]


def _matches(order: KisOrder, r: DailyLike, speed: float = 1.0) -> bool:
    if r.code != order.code or r.side != order.side or r.qty != order.qty:
        return False
    if order.order_type == "limit" and r.price != order.price:
        return False
    if r.orgn_odno and norm_odno(r.orgn_odno) != "0":
        return False  # a cancel or revise order, not a new one
    return _within(order, r.ord_tmd, speed)


def _within(order: KisOrder, hhmmss: str, speed: float = 1.0) -> bool:
    """Whether a KIS order time (KST HHMMSS of the order's day) falls in the window after it was sent."""
    if len(hhmmss) != 6 or not hhmmss.isdigit():
        return True  # no usable time: code, side, quantity and price decide
    from core.krx import KST

    sent = dt.datetime.fromtimestamp(order.sent_ns / 1e9, KST)
    t = sent.replace(hour=int(hhmmss[:2]), minute=int(hhmmss[2:4]), second=int(hhmmss[4:]), microsecond=0)
    delta = (t - sent.replace(microsecond=0)).total_seconds()
    return -MATCH_BEFORE_S * speed <= delta <= MATCH_AFTER_S * speed


def order_row(order: KisOrder) -> dict[str, Any]:
    return asdict(order)


def fill_row(f: KisFill) -> dict[str, Any]:
    return asdict(f)


def foreign_orders(book: KisBook, rows: list[Any], trading_date: str) -> list[OrderEvent]:
    """KIS orders of the account that are no firm order (the owner's own, from HTS): for the reconciler to see."""
    from services.kis_gateway.clock import hhmmss_ns

    out = []
    for r in rows:
        key = (trading_date, norm_odno(r.odno))
        if key in book.by_odno or key in book.cancel_odnos or (r.orgn_odno and norm_odno(r.orgn_odno) != "0"):
            continue
        remaining = max(0, r.remaining_qty)
        status = OrderStatus.FILLED if r.filled_qty >= r.qty else (
            OrderStatus.CANCELED if remaining == 0 else OrderStatus.ACCEPTED)
        out.append(OrderEvent(client_order_id=f"HTS-{key[1]}", agent_id="-", code=r.code, side=Side(r.side),
                              status=status, qty=r.qty, price=r.price, filled_qty=r.filled_qty,
                              remaining_qty=remaining, avg_fill_price=r.avg_price, broker_order_id=key[1],
                              ts_ns=hhmmss_ns(trading_date, r.ord_tmd)))
    return out


def foreign_fills(book: KisBook, rows: list[Any], trading_date: str) -> list[Fill]:
    """The executions of those orders, one per order as far as it is filled."""
    return [Fill(exec_id=exec_id(trading_date, e.broker_order_id, e.filled_qty), client_order_id=e.client_order_id,
                 agent_id="-", code=e.code, side=e.side, qty=e.filled_qty, price=max(1, e.avg_fill_price),
                 broker_order_id=e.broker_order_id, ts_ns=e.ts_ns)
            for e in foreign_orders(book, rows, trading_date) if e.filled_qty > 0]
