"""The order state machine: transitions, idempotency, races, overfills, replay."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bus.codec import decode, encode
from core.messages import TERMINAL_STATUSES, OrderEvent, OrderStatus, OrderType, Side
from core.orders import Order, OrderBook, Refusal, to_event

T0 = 1_700_000_000_000_000_000


def _submitted(book: OrderBook, coid: str = "a1-20260105-1", qty: int = 100, price: int = 71_000) -> Order:
    out = book.submit(coid, "a1", "005930", Side.BUY, qty, price, T0)
    assert out.order is not None
    return out.order


def _accepted(book: OrderBook, coid: str = "a1-20260105-1", qty: int = 100, boid: str = "B1") -> Order:
    order = _submitted(book, coid, qty)
    book.ack(coid, boid, T0 + 1)
    return order


def test_submit_goes_new_then_submitted() -> None:
    book = OrderBook()
    out = book.submit("a1-20260105-1", "a1", "005930", "buy", 10, 71_000, T0)
    assert [(t.from_status, t.to_status) for t in out.transitions] == [
        (OrderStatus.NEW, OrderStatus.NEW),
        (OrderStatus.NEW, OrderStatus.SUBMITTED),
    ]
    assert out.order is not None and out.order.status is OrderStatus.SUBMITTED
    assert book.open_orders("a1") == [out.order]


def test_duplicate_client_order_id_returns_the_original() -> None:
    book = OrderBook()
    first = book.submit("a1-20260105-1", "a1", "005930", "buy", 10, 71_000, T0)
    again = book.submit("a1-20260105-1", "a1", "005930", "sell", 99, 70_000, T0 + 5)
    assert again.duplicate and again.ok
    assert again.order is first.order
    assert again.order.side is Side.BUY and again.order.qty == 10
    assert again.transitions == []
    assert book.counters["duplicate_order"] == 1


def test_full_life_accepted_partial_filled() -> None:
    book = OrderBook()
    order = _submitted(book)
    book.ack(order.client_order_id, "B1", T0 + 1)
    assert order.status is OrderStatus.ACCEPTED
    out = book.apply_fill("E1", 40, 71_000, T0 + 2, client_order_id=order.client_order_id, fee_won=4)
    assert order.status is OrderStatus.PARTIALLY_FILLED and order.remaining_qty == 60
    assert [f.exec_id for f in out.fills] == ["E1"]
    book.apply_fill("E2", 60, 71_100, T0 + 3, broker_order_id="B1")
    assert order.status is OrderStatus.FILLED
    assert order.filled_qty == 100 and order.remaining_qty == 0
    assert order.avg_fill_price == (40 * 71_000 + 60 * 71_100 + 50) // 100
    assert order.fees_won == 4
    assert book.open_orders("a1") == []


def test_fill_applied_twice_is_a_no_op() -> None:
    book = OrderBook()
    order = _accepted(book)
    book.apply_fill("E1", 30, 71_000, T0 + 2, client_order_id=order.client_order_id)
    again = book.apply_fill("E1", 30, 71_000, T0 + 3, broker_order_id="B1")
    assert again.duplicate and again.fills == [] and again.transitions == []
    assert order.filled_qty == 30


def test_fill_before_ack_is_applied_once_after_ack() -> None:
    book = OrderBook()
    order = _submitted(book)
    held = book.apply_fill("E1", 30, 71_000, T0 + 1, client_order_id=order.client_order_id)
    assert held.held and order.filled_qty == 0 and order.status is OrderStatus.SUBMITTED
    assert book.apply_fill("E1", 30, 71_000, T0 + 1, client_order_id=order.client_order_id).duplicate
    out = book.ack(order.client_order_id, "B1", T0 + 2)
    assert [t.to_status for t in out.transitions] == [OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED]
    assert [f.exec_id for f in out.fills] == ["E1"]
    assert order.filled_qty == 30 and book.held == []
    assert book.apply_fill("E1", 30, 71_000, T0 + 3, broker_order_id="B1").duplicate
    assert order.filled_qty == 30


def test_notices_for_an_unknown_broker_order_id_are_held_and_applied_in_order() -> None:
    book = OrderBook()
    order = _submitted(book)
    assert book.apply_fill("E1", 30, 71_000, T0 + 1, broker_order_id="B9").held
    assert book.apply_fill("E2", 70, 70_900, T0 + 2, broker_order_id="B9").held
    out = book.ack(order.client_order_id, "B9", T0 + 3)
    assert [t.to_status for t in out.transitions] == [
        OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED,
    ]
    assert [f.exec_id for f in out.fills] == ["E1", "E2"]
    assert book.by_broker_order_id("B9") is order


def test_overfill_is_refused_with_an_alert() -> None:
    book = OrderBook()
    order = _accepted(book, qty=50)
    book.apply_fill("E1", 40, 71_000, T0 + 2, client_order_id=order.client_order_id)
    out = book.apply_fill("E2", 20, 71_000, T0 + 3, client_order_id=order.client_order_id)
    assert out.refused == Refusal.OVERFILL
    assert [a.kind for a in out.alerts] == [Refusal.OVERFILL]
    assert order.filled_qty == 40 and order.status is OrderStatus.PARTIALLY_FILLED


def test_illegal_transition_is_refused_counted_and_not_applied() -> None:
    book = OrderBook()
    order = _accepted(book)
    out = book.mark_submitted(order.client_order_id, T0 + 5)
    assert out.refused == Refusal.ILLEGAL_TRANSITION
    assert order.status is OrderStatus.ACCEPTED
    assert book.illegal["mark_submitted@accepted"] == 1
    book.cancel_rejected(order.client_order_id, "X", "not pending", T0 + 6)
    assert book.illegal_total == 2 and order.status is OrderStatus.ACCEPTED


def test_terminal_state_never_changes() -> None:
    book = OrderBook()
    order = _accepted(book, qty=10)
    book.apply_fill("E1", 10, 71_000, T0 + 2, client_order_id=order.client_order_id)
    assert order.status is OrderStatus.FILLED
    late = book.apply_fill("E2", 1, 71_000, T0 + 3, client_order_id=order.client_order_id)
    assert late.refused == Refusal.ILLEGAL_TRANSITION
    assert [a.kind for a in late.alerts] == [Refusal.FILL_ON_TERMINAL_ORDER]
    for call in (
        lambda: book.request_cancel(order.client_order_id, 0, T0 + 4),
        lambda: book.reject(order.client_order_id, "X", "late", T0 + 4),
        lambda: book.cancel_confirmed(0, T0 + 4, client_order_id=order.client_order_id),
        lambda: book.expire_open(T0 + 5),
    ):
        call()
        assert order.status is OrderStatus.FILLED and order.filled_qty == 10


def test_reject_keeps_the_reason() -> None:
    book = OrderBook()
    order = _submitted(book)
    out = book.reject(order.client_order_id, "INSUFFICIENT_CASH", "need 7,100,000 won", T0 + 1)
    assert order.status is OrderStatus.REJECTED
    event = to_event(order, out.transitions[-1])
    assert event.reason_code == "INSUFFICIENT_CASH" and event.status is OrderStatus.REJECTED


def test_invalid_quantity_is_rejected_with_a_reason_not_a_crash() -> None:
    book = OrderBook()
    out = book.submit("a1-20260105-9", "a1", "005930", "buy", 0, 71_000, T0)
    assert out.order is not None and out.order.status is OrderStatus.REJECTED
    assert out.order.reason_code == Refusal.INVALID_QUANTITY
    bad_side = book.submit("a1-20260105-10", "a1", "005930", "short", 1, 71_000, T0)
    assert bad_side.refused == Refusal.INVALID_ORDER and bad_side.order is None


def test_cancel_all_then_confirmed() -> None:
    book = OrderBook()
    order = _accepted(book)
    book.request_cancel(order.client_order_id, 0, T0 + 2)
    assert order.status is OrderStatus.CANCEL_PENDING
    assert book.request_cancel(order.client_order_id, 0, T0 + 3).duplicate
    book.cancel_confirmed(0, T0 + 4, broker_order_id="B1")
    assert order.status is OrderStatus.CANCELED and order.canceled_qty == 100


def test_partial_cancel_reduces_what_remains() -> None:
    book = OrderBook()
    order = _accepted(book)
    book.request_cancel(order.client_order_id, 30, T0 + 2)
    out = book.cancel_confirmed(30, T0 + 3, client_order_id=order.client_order_id)
    assert order.status is OrderStatus.ACCEPTED and order.remaining_qty == 70
    assert out.transitions[-1].remaining_qty == 70


def test_fill_while_cancel_pending_keeps_pending_and_cancel_takes_the_rest() -> None:
    book = OrderBook()
    order = _accepted(book)
    book.request_cancel(order.client_order_id, 0, T0 + 2)
    book.apply_fill("E1", 25, 71_000, T0 + 3, client_order_id=order.client_order_id)
    assert order.status is OrderStatus.CANCEL_PENDING and order.filled_qty == 25
    book.cancel_confirmed(0, T0 + 4, client_order_id=order.client_order_id)
    assert order.status is OrderStatus.CANCELED
    assert order.filled_qty == 25 and order.canceled_qty == 75


def test_cancel_rejected_returns_to_the_previous_live_state() -> None:
    book = OrderBook()
    order = _accepted(book)
    book.apply_fill("E1", 10, 71_000, T0 + 2, client_order_id=order.client_order_id)
    book.request_cancel(order.client_order_id, 0, T0 + 3)
    book.cancel_rejected(order.client_order_id, "APBK0918", "already filled", T0 + 4)
    assert order.status is OrderStatus.PARTIALLY_FILLED
    assert order.reason_code == "APBK0918"


def test_expire_open_closes_every_open_order_at_the_day_roll() -> None:
    book = OrderBook()
    a = _accepted(book, "a1-20260105-1", boid="B1")
    b = _submitted(book, "a1-20260105-2")
    c = _accepted(book, "a1-20260105-3", qty=5, boid="B3")
    book.apply_fill("E1", 5, 71_000, T0 + 2, client_order_id=c.client_order_id)
    book.apply_fill("E9", 1, 71_000, T0 + 2, broker_order_id="B-unknown")
    out = book.expire_open(T0 + 10)
    assert a.status is OrderStatus.EXPIRED and b.status is OrderStatus.EXPIRED
    assert c.status is OrderStatus.FILLED
    assert {t.client_order_id for t in out.transitions} == {a.client_order_id, b.client_order_id}
    assert book.open_orders() == [] and book.held == []
    assert [a.kind for a in out.alerts] == [Refusal.HELD_NOTICE_DISCARDED]


def test_to_event_carries_the_order_figures() -> None:
    book = OrderBook()
    order = _accepted(book)
    book.apply_fill("E1", 40, 71_000, T0 + 2, client_order_id=order.client_order_id)
    event = to_event(order)
    assert (event.status, event.filled_qty, event.remaining_qty, event.avg_fill_price, event.broker_order_id) == (
        OrderStatus.PARTIALLY_FILLED, 40, 60, 71_000, "B1",
    )


def test_market_order_needs_no_price() -> None:
    book = OrderBook()
    out = book.submit("a1-20260105-1", "a1", "005930", "buy", 10, 0, T0, order_type=OrderType.MARKET)
    assert out.order is not None and out.order.status is OrderStatus.SUBMITTED


# --- properties over random sequences ---------------------------------------

COIDS = ["a1-20260105-1", "a1-20260105-2", "a2-20260105-1"]
BOIDS = ["B1", "B2", "B3", "B4"]

_op = st.one_of(
    st.tuples(st.just("submit"), st.sampled_from(COIDS), st.integers(1, 50)),
    st.tuples(st.just("ack"), st.sampled_from(COIDS), st.sampled_from(BOIDS)),
    st.tuples(st.just("fill_coid"), st.sampled_from(COIDS), st.integers(0, 12), st.integers(1, 30)),
    st.tuples(st.just("fill_boid"), st.sampled_from(BOIDS), st.integers(0, 12), st.integers(1, 30)),
    st.tuples(st.just("cancel"), st.sampled_from(COIDS), st.integers(0, 20)),
    st.tuples(st.just("cancel_confirmed"), st.sampled_from(COIDS), st.integers(0, 20)),
    st.tuples(st.just("cancel_rejected"), st.sampled_from(COIDS)),
    st.tuples(st.just("reject"), st.sampled_from(COIDS)),
    st.tuples(st.just("expire"),),
)


def _run(book: OrderBook, op: tuple[Any, ...], now_ns: int):
    kind = op[0]
    if kind == "submit":
        return book.submit(op[1], op[1][:2], "005930", "buy", op[2], 10_000, now_ns)
    if kind == "ack":
        return book.ack(op[1], op[2], now_ns)
    if kind == "fill_coid":
        return book.apply_fill(f"E{op[2]}", op[3], 10_000, now_ns, client_order_id=op[1])
    if kind == "fill_boid":
        return book.apply_fill(f"E{op[2]}", op[3], 10_000, now_ns, broker_order_id=op[1])
    if kind == "cancel":
        return book.request_cancel(op[1], op[2], now_ns)
    if kind == "cancel_confirmed":
        return book.cancel_confirmed(op[2], now_ns, client_order_id=op[1])
    if kind == "cancel_rejected":
        return book.cancel_rejected(op[1], "X", "refused", now_ns)
    if kind == "reject":
        return book.reject(op[1], "X", "refused", now_ns)
    return book.expire_open(now_ns)


def _state(book: OrderBook) -> Any:
    orders = {
        k: (o.status, o.filled_qty, o.fill_value_won, o.canceled_qty, o.broker_order_id, frozenset(o.exec_ids),
            o.live_status, o.updated_ns)
        for k, o in book.orders.items()
    }
    return orders, list(book.held), dict(book.counters), dict(book.illegal), dict(book.by_broker_id)


@settings(max_examples=300, deadline=None)
@given(st.lists(_op, max_size=40))
def test_random_event_sequences_keep_the_invariants(ops: list[tuple[Any, ...]]) -> None:
    book = OrderBook()
    records = []
    applied_qty: dict[str, dict[str, int]] = {}
    terminal_seen: dict[str, OrderStatus] = {}
    for i, op in enumerate(ops):
        before = _state(book)[0]
        illegal_before = book.illegal_total
        out = _run(book, op, T0 + i)
        records.append(out.record)
        for fill in out.fills:
            per_order = applied_qty.setdefault(fill.client_order_id, {})
            assert fill.exec_id not in per_order, "a fill was applied twice"
            per_order[fill.exec_id] = fill.qty
        if out.refused == Refusal.ILLEGAL_TRANSITION:
            assert book.illegal_total == illegal_before + 1
            assert _state(book)[0] == before, "an illegal transition changed state"
        for coid, order in book.orders.items():
            assert 0 <= order.filled_qty <= order.qty
            assert order.filled_qty + order.canceled_qty <= order.qty
            assert sum(applied_qty.get(coid, {}).values()) == order.filled_qty
            assert len(order.exec_ids) == len(applied_qty.get(coid, {}))
            if coid in terminal_seen:
                assert order.status is terminal_seen[coid]
            elif order.status in TERMINAL_STATUSES:
                terminal_seen[coid] = order.status
            if order.status is OrderStatus.FILLED:
                assert order.filled_qty == order.qty
            open_ids = {o.client_order_id for o in book.open_orders()}
            assert (coid in open_ids) == (order.status not in TERMINAL_STATUSES)
    rebuilt = OrderBook.replay(records)
    assert _state(rebuilt) == _state(book)


def test_replay_of_the_journal_gives_the_same_state() -> None:
    book = OrderBook()
    records = [
        book.submit("a1-20260105-1", "a1", "005930", "buy", 100, 71_000, T0).record,
        book.apply_fill("E1", 30, 71_000, T0 + 1, broker_order_id="B1").record,
        book.ack("a1-20260105-1", "B1", T0 + 2).record,
        book.request_cancel("a1-20260105-1", 20, T0 + 3).record,
        book.cancel_confirmed(20, T0 + 4, broker_order_id="B1").record,
        book.submit("a1-20260105-1", "a1", "005930", "buy", 100, 71_000, T0 + 5).record,
    ]
    rebuilt = OrderBook.replay(records)
    assert _state(rebuilt) == _state(book)
    order = rebuilt.get("a1-20260105-1")
    assert order is not None and (order.filled_qty, order.remaining_qty) == (30, 50)


def _validated(event: OrderEvent) -> OrderEvent:
    """The same event, built through pydantic's validation."""
    return OrderEvent(**{name: getattr(event, name) for name in OrderEvent.model_fields})


@settings(max_examples=200, deadline=None)
@given(st.lists(_op, max_size=30))
def test_events_built_without_validation_equal_the_validated_ones(ops: list[tuple[Any, ...]]) -> None:
    book = OrderBook()
    for i, op in enumerate(ops):
        out = _run(book, op, T0 + i)
        for t in out.transitions:
            order = book.get(t.client_order_id)
            assert order is not None
            for event in (to_event(order, t), to_event(order)):
                validated = _validated(event)
                assert event == validated
                assert event.model_dump() == validated.model_dump()
                assert encode("oms.event.a1", "oms", 1, event) == encode("oms.event.a1", "oms", 1, validated)
                assert decode(encode("oms.event.a1", "oms", 1, event)).msg == validated


def test_an_order_with_fields_an_event_cannot_carry_still_fails_validation() -> None:
    book = OrderBook()
    out = book.submit("a1-20260105-1", "a1", "BAD", "buy", 10, 71_000, T0)
    assert out.order is not None
    with pytest.raises(ValidationError):
        to_event(out.order)
    out = book.submit("a1-20260105-2", "a1", "005930", "buy", 0, 71_000, T0)  # refused: no quantity
    assert out.order is not None and to_event(out.order) == _validated(to_event(out.order))


def test_a_roll_through_a_date_leaves_the_next_days_orders_working_and_replays_the_same() -> None:
    book = OrderBook()
    outs = [book.submit("a-20260303-1", "a", "005930", "buy", 1, 70_000, T0), book.ack("a-20260303-1", "B1", T0 + 1),
            book.submit("a-20260304-1", "a", "005930", "buy", 1, 70_000, T0 + 2),
            book.ack("a-20260304-1", "B2", T0 + 3)]
    out = book.expire_open(T0 + 4, "20260303")
    assert [t.client_order_id for t in out.transitions] == ["a-20260303-1"]
    assert book.get("a-20260304-1").status is OrderStatus.ACCEPTED
    replayed = OrderBook.replay([o.record for o in [*outs, out]])
    assert [(o.client_order_id, o.status) for o in replayed.orders.values()] == [
        ("a-20260303-1", OrderStatus.EXPIRED), ("a-20260304-1", OrderStatus.ACCEPTED)]


def test_the_last_shares_of_an_order_whose_rest_was_canceled_end_it_canceled_as_the_broker_shows_it() -> None:
    book = OrderBook()
    book.submit("a-20260303-1", "a", "005930", "buy", 50, 70_000, T0)
    book.ack("a-20260303-1", "B1", T0 + 1)
    book.request_cancel("a-20260303-1", 0, T0 + 2)
    book.cancel_confirmed(32, T0 + 3, client_order_id="a-20260303-1")
    out = book.apply_fill("X1", 18, 70_000, T0 + 4, "a-20260303-1", "B1", 10, 0)
    order = book.get("a-20260303-1")
    assert out.fills and (order.status, order.filled_qty, order.canceled_qty) == (OrderStatus.CANCELED, 18, 32)
