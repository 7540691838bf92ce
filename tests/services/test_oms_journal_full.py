"""A journal that refuses writes (a full disk) against the real order manager: no order goes out unjournaled.

The order manager's ``fault`` command makes its next journal writes raise
``sqlite3.OperationalError("database or disk is full")``. New orders must then
be refused with JOURNAL_UNAVAILABLE and never reach the exchange, an alert
must say so, and once writes succeed again the order manager catches up with
the exchange and accepts orders again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from bus.pubsub import Subscriber
from core.messages import Alert, Command, OrderStatus
from services.order_manager.desk import DeskReason
from tests.services.test_order_manager import Stack, running_stack, wait_for


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(tmp_path_factory.mktemp("oms-journal-full"))


def journal_ok(stack: Stack) -> bool:
    st = stack.status()
    return bool(st and st["journal_ok"])


def test_an_order_meeting_a_full_journal_is_refused_and_never_reaches_the_exchange(stack: Stack) -> None:
    alerts = Subscriber(stack.ctx, stack.settings.endpoint("bus_out"), ["sys.alert"])
    try:
        time.sleep(0.3)  # the subscription reaches the proxy first
        assert stack.command("fault", kind="journal_full", writes=3) == {"failing_writes": 3}
        refused = stack.order(stack.resting_price())
        assert refused.status is OrderStatus.REJECTED
        assert refused.reason_code == DeskReason.JOURNAL_UNAVAILABLE
        assert stack.exchange.order_status(refused.client_order_id) is None
        assert not stack.journal_rows("SELECT 1 FROM orders WHERE client_order_id = ?", refused.client_order_id)
        seen: list[Any] = []

        def alerted(kind: str) -> bool:
            seen.extend(env.msg for env in alerts.drain())
            return any(isinstance(a, Alert) and a.kind == kind for a in seen)

        wait_for(lambda: alerted("journal_unavailable"), 10, "the journal_unavailable alert")
        wait_for(lambda: journal_ok(stack), 20, "the journal to take writes again")
        wait_for(lambda: alerted("journal_recovered"), 10, "the journal_recovered alert")
        again = stack.order(stack.resting_price())
        assert again.status is OrderStatus.ACCEPTED and again.broker_order_id
    finally:
        alerts.close()


def test_a_fill_during_the_outage_ends_in_the_journal_exactly_as_at_the_exchange(stack: Stack) -> None:
    order = stack.order(stack.crossing_price(), qty=3)
    assert order.status is OrderStatus.ACCEPTED
    stack.command("fault", kind="journal_full", writes=2)  # the fill notice races the failing writes
    wait_for(lambda: journal_ok(stack) and stack.journal_rows(
        "SELECT 1 FROM orders WHERE client_order_id = ? AND status = 'filled'", order.client_order_id),
        30, "the order filled in the journal after the outage")
    at_exchange = sorted((f.exec_id, f.qty, f.price, f.fee_won, f.tax_won) for f in stack.exchange.fills_today()
                         if f.client_order_id == order.client_order_id)
    journaled = sorted(stack.journal_rows("SELECT exec_id, qty, price, fee_won, tax_won FROM fills "
                                          "WHERE client_order_id = ?", order.client_order_id))
    assert journaled == at_exchange and sum(r[1] for r in journaled) == 3


def test_a_bad_fault_command_is_refused_with_a_reason(stack: Stack) -> None:
    reply = stack.oms.call(Command(command_id="bad-fault", name="fault", args={"kind": "journal_full", "writes": -1}))
    assert not reply.ok and reply.reason_code == "BAD_FAULT"
