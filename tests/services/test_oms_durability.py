"""Orders in flight and crashes of the order manager against the real stack: nothing lost, doubled or guessed.

One stack per module (bus, paper exchange, market data, risk guard, order
manager). The in-flight tests make the exchange answer late or not at all and
check each order ends in the state the exchange has. The durability tests arm
a crash point in the order manager (``TRADER_OMS_FAULT_POINT``), let it kill
itself there, restart it, and check the journal against the exchange.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from bus.rpc import RpcClient, RpcFailure
from core.messages import CancelRequest, OrderEvent, OrderRequest, OrderStatus, Side
from services.order_manager.faults import (
    AFTER_BROKER_BEFORE_JOURNAL,
    AFTER_JOURNAL_BEFORE_BROKER,
    ENV_VAR,
    MID_FILL,
)
from tests.services.test_order_manager import AGENT, CODE, Stack, accepting, running_stack, wait_for

SETTLED = {"accepted", "partially_filled", "filled", "canceled", "rejected", "expired"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(tmp_path_factory.mktemp("oms-durability"))


def restart_oms(stack: Stack, fault: str = "") -> None:
    """Start the order manager again (after it died or was stopped), with a crash point armed or none."""
    stack.stop("order-manager")
    stack.oms.close()
    (stack.run_dir / "run" / "order-manager.pid").unlink(missing_ok=True)
    stack.env = {k: v for k, v in stack.env.items() if k != ENV_VAR}
    if fault:
        stack.env[ENV_VAR] = fault
    try:
        stack.start("order-manager")
    finally:
        stack.env.pop(ENV_VAR, None)
    wait_for(lambda: accepting(stack), 60, "the order manager to reconcile and accept orders")


def journal_orders(stack: Stack) -> dict[str, dict[str, Any]]:
    return {o["client_order_id"]: o for o in stack.command("journal_state")["orders"]}


def exchange_orders(stack: Stack) -> dict[str, OrderEvent]:
    return {o.client_order_id: o for o in stack.exchange.orders_today()}


def matches_exchange(stack: Stack, coids: list[str]) -> bool:
    """Every order settled in the journal, in the exchange's state, with the exchange's filled quantity."""
    ours, theirs = journal_orders(stack), exchange_orders(stack)
    for coid in coids:
        mine = ours.get(coid)
        if mine is None or mine["status"] not in SETTLED:
            return False
        at_exchange = theirs.get(coid)
        if at_exchange is None:
            if mine["status"] != "rejected":
                return False
        elif (mine["status"], mine["filled_qty"]) != (at_exchange.status.value, at_exchange.filled_qty):
            return False
    return True


def assert_nothing_lost_or_doubled(stack: Stack, coids: list[str]) -> None:
    """The journal and the exchange agree order by order, and every fill is in the journal exactly once."""
    wait_for(lambda: matches_exchange(stack, coids), 30, "the journal to settle in the exchange's states")
    ours, theirs = journal_orders(stack), exchange_orders(stack)
    per_coid = Counter(o.client_order_id for o in stack.exchange.orders_today())
    for coid in coids:
        assert per_coid[coid] <= 1, f"{coid} reached the exchange {per_coid[coid]} times"
        never_sent = ours[coid]["reason_code"] in ("NEVER_REACHED_BROKER", "BROKER_DISCONNECTED")
        assert (coid in theirs) == (not never_sent), (coid, ours[coid], theirs.get(coid))
    state = stack.command("journal_state")
    journal_exec = [f["exec_id"] for f in state["fills"] if f["client_order_id"] in coids]
    exchange_fills = [f for f in stack.exchange.fills_today() if f.client_order_id in coids]
    assert sorted(journal_exec) == sorted(f.exec_id for f in exchange_fills)  # none missing, none twice
    for coid in coids:
        assert ours[coid]["filled_qty"] == sum(f.qty for f in exchange_fills if f.client_order_id == coid)
    applied = stack.journal_rows("SELECT COUNT(*), COUNT(DISTINCT exec_id) FROM fills")
    assert applied[0][0] == applied[0][1]


def send_until_dead(stack: Stack, prices: list[int]) -> tuple[list[OrderRequest], dict[str, OrderEvent]]:
    """Send orders one by one until the order manager dies at its crash point; the answers it gave."""
    client = RpcClient(stack.ctx, stack.settings.endpoint("order_manager_rpc"), timeout_ms=3000, retries=0)
    proc = stack.procs["order-manager"]
    sent: list[OrderRequest] = []
    answers: dict[str, OrderEvent] = {}
    date = stack.trading_date
    try:
        for price in prices:
            if proc.poll() is not None:
                break
            stack._n += 1
            req = OrderRequest(client_order_id=f"{AGENT}-{date}-{stack._n}", agent_id=AGENT, code=CODE, side=Side.BUY, qty=1,
                               price=price)
            sent.append(req)
            try:
                reply = client.call(req)
            except RpcFailure:
                break
            assert isinstance(reply, OrderEvent), reply
            answers[req.client_order_id] = reply
        wait_for(lambda: proc.poll() is not None, 20, "the order manager to die at its crash point")
    finally:
        client.close()
    assert proc.returncode == -9, proc.returncode
    return sent, answers


def reached_the_order_manager(stack: Stack, sent: list[OrderRequest]) -> list[str]:
    """The orders the crashed process got: in its journal or at the exchange once it has restarted and reconciled."""
    ours, theirs = journal_orders(stack), exchange_orders(stack)
    return [r.client_order_id for r in sent if r.client_order_id in ours or r.client_order_id in theirs]


def retry_after_restart(stack: Stack, sent: list[OrderRequest], answers: dict[str, OrderEvent], reached: list[str]) -> None:
    """An agent repeating its requests gets the original answers and the exchange no second order.

    A request the crashed process never read (sent in the gap between its last
    answer and its death, left in the dead socket) is placed by the repeat, once.
    """
    before = Counter(o.client_order_id for o in stack.exchange.orders_today())
    for req in sent:
        again = stack.oms.call(req)
        assert isinstance(again, OrderEvent), again
        if req.client_order_id in answers:
            assert again == answers[req.client_order_id]
    expected = before + Counter(r.client_order_id for r in sent if r.client_order_id not in reached)
    wait_for(lambda: Counter(o.client_order_id for o in stack.exchange.orders_today()) == expected, 30,
             f"the exchange to hold exactly {dict(expected - before) or 'no new orders'} more")


# --- orders in flight ----------------------------------------------------------------


def test_order_answered_too_late_is_queried_and_ends_as_the_exchange_has_it(stack: Stack) -> None:
    stack.exchange.fault(kind="delay", ms=1500)  # longer than the order manager's broker timeout
    try:
        reply = stack.order(stack.resting_price())
        assert reply.status in (OrderStatus.SUBMITTED, OrderStatus.REJECTED), reply
    finally:
        stack.exchange.fault(kind="clear")
    coid = reply.client_order_id
    assert_nothing_lost_or_doubled(stack, [coid])
    if reply.status is OrderStatus.SUBMITTED:  # it went out: the exchange has it, accepted
        assert journal_orders(stack)[coid]["status"] == "accepted"
    wait_for(lambda: accepting(stack), 60, "the order manager to accept orders again")


def test_cancel_answered_too_late_is_queried_and_ends_canceled(stack: Stack) -> None:
    wait_for(lambda: accepting(stack), 60, "the order manager to accept orders")
    placed = stack.order(stack.resting_price())
    assert placed.status is OrderStatus.ACCEPTED
    stack.exchange.fault(kind="delay", ms=1500)
    try:
        reply = stack.oms.call(CancelRequest(client_order_id=placed.client_order_id, agent_id=AGENT))
        assert isinstance(reply, OrderEvent) and reply.status is not OrderStatus.CANCELED, reply
    finally:
        stack.exchange.fault(kind="clear")
    assert_nothing_lost_or_doubled(stack, [placed.client_order_id])
    assert journal_orders(stack)[placed.client_order_id]["status"] == "canceled"
    wait_for(lambda: accepting(stack), 60, "the order manager to accept orders again")


def test_order_lost_in_a_disconnect_is_rejected_never_reached_broker(stack: Stack) -> None:
    wait_for(lambda: accepting(stack), 60, "the order manager to accept orders")
    price = stack.resting_price()
    stack.exchange.fault(kind="disconnect", seconds=2)
    reply = stack.order(price)
    coid = reply.client_order_id
    wait_for(lambda: accepting(stack), 60, "the order manager to reconnect and reconcile")
    assert_nothing_lost_or_doubled(stack, [coid])
    final = journal_orders(stack)[coid]
    assert (final["status"], final["reason_code"]) in (("rejected", "NEVER_REACHED_BROKER"),
                                                       ("rejected", "BROKER_DISCONNECTED"))
    assert coid not in exchange_orders(stack)


# --- crashes at the fault points ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("point", [AFTER_JOURNAL_BEFORE_BROKER, AFTER_BROKER_BEFORE_JOURNAL, MID_FILL])
def test_oms_killed_at_a_fault_point_loses_and_duplicates_nothing(stack: Stack, point: str) -> None:
    restart_oms(stack, f"{point}:2")
    crossing = stack.crossing_price()
    sent, answers = send_until_dead(stack, [crossing] * 8)
    assert sent, "no order was sent"
    restart_oms(stack)
    coids = [r.client_order_id for r in sent]
    reached = reached_the_order_manager(stack, sent)
    assert set(answers) <= set(reached), "an answered order is neither in the journal nor at the exchange"
    assert len(coids) - len(reached) <= 1, f"only the request sent as the process died may be unread: {coids}, {reached}"
    assert_nothing_lost_or_doubled(stack, reached)  # recovered by the restart alone, before any retry
    retry_after_restart(stack, sent, answers, reached)
    assert_nothing_lost_or_doubled(stack, coids)
    if point == AFTER_JOURNAL_BEFORE_BROKER:
        never = [c for c, o in journal_orders(stack).items() if c in coids and o["reason_code"] == "NEVER_REACHED_BROKER"]
        assert len(never) == 1 and never[0] not in exchange_orders(stack)
    assert stack.order(stack.resting_price()).status is OrderStatus.ACCEPTED


def test_fault_point_spec_is_checked() -> None:
    from services.order_manager.faults import FaultPoints

    assert FaultPoints("").point == ""
    armed = FaultPoints("mid_fill:3")
    assert (armed.point, armed.on_hit) == ("mid_fill", 3)
    armed.hit("after_journal_before_broker")
    armed.hit("mid_fill")
    assert armed.hits == 1  # only its own point counts, and the process lives until the 3rd
    for bad in ("nowhere", "mid_fill:0", "mid_fill:x"):
        with pytest.raises(ValueError):
            FaultPoints(bad)
