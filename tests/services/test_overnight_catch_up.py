"""An order filled at the close while the order manager was down is applied, not expired, the next morning.

Real processes at x60 from 15:25: an order enters the closing auction, the
order manager is killed before the auction prints, the exchange moves on to
the next trading day, and only then does the order manager come back. Today's
executions at the broker no longer hold the fill: the order manager asks for
the closed day's (the broker keeps them), applies the fill by its execution
id, and the ledger counts it.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from core.messages import OrderStatus
from tests.services.test_ledger_stack import LedgerStack, back_office
from tests.services.test_order_manager import AGENT, CODE, accepting, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LedgerStack]:
    with back_office(tmp_path_factory, "overnight", "15:24") as s:
        yield s


def test_a_fill_of_the_closing_auction_missed_by_a_dead_order_manager_is_applied_after_the_night(
        stack: LedgerStack) -> None:
    day = stack.trading_date
    assert stack.exchange.ping()["session"] == "closing"  # the closing auction collects orders
    order = stack.order(stack.crossing_price(), qty=4)
    assert order.status is OrderStatus.ACCEPTED and order.filled_qty == 0, order  # it waits for the auction
    stack.stop("order-manager", signal.SIGKILL)
    wait_for(lambda: stack.exchange.ping()["trading_date"] > day, 120, "the exchange's next trading day")
    assert any(f.client_order_id == order.client_order_id for f in stack.exchange.fills_today(day))
    assert not stack.exchange.fills_today()  # today's executions at the broker no longer hold it
    assert stack.exchange.order_status(order.client_order_id).status is OrderStatus.FILLED

    stack.start("order-manager")
    wait_for(lambda: accepting(stack), 60, "the order manager back")
    rows = stack.journal_rows("SELECT status, filled_qty FROM orders WHERE client_order_id = ?", order.client_order_id)
    assert rows == [("filled", 4)], rows
    fills = stack.journal_rows("SELECT qty FROM fills WHERE client_order_id = ?", order.client_order_id)
    assert fills == [(4,)]
    books = stack.command("positions")
    assert books["agents"][AGENT]["positions"][CODE]["qty"] == 4
    assert stack.command("ledger_day", date=day)["rolled"] is not None
