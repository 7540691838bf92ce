"""``trader orders`` and ``trader positions`` fitted to the terminal, against a real order manager and the pieces
it trades through (bus, paper exchange, market data, risk guard), with orders and a fill of the test's own."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from core.messages import OrderStatus
from services.cli.orders import ORDER_COLUMNS
from tests.cli.conftest import assert_fits, tables, trader
from tests.services.test_order_manager import Stack, running_stack, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

EVERY = [c.header for c in ORDER_COLUMNS]
ESSENTIAL = [c.header for c in ORDER_COLUMNS if c.essential]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for s in running_stack(tmp_path_factory.mktemp("orders")):
        for _ in range(2):
            assert s.order(s.resting_price(), qty=101).status is OrderStatus.ACCEPTED
        assert s.order(s.crossing_price(), qty=3).status is OrderStatus.ACCEPTED
        wait_for(lambda s=s: s.journal_rows("SELECT count(*) FROM fills")[0][0] >= 1, 30, "the crossing order to fill")
        yield s


@pytest.mark.parametrize("columns", [80, 120])
def test_orders_fits_the_terminal_and_names_what_it_left_out(stack: Stack, columns: int) -> None:
    listed = json.loads(trader(stack.env, "orders", "--json").stdout)
    out = trader(stack.env, "orders", columns=columns)
    assert out.returncode == 0, out.stderr
    (t,) = tables(out.stdout)
    assert_fits(t, EVERY, ESSENTIAL, columns)
    if columns == 80:
        assert t.hidden, "eleven columns of orders do not fit in 80"
    assert len(t.rows) == len(listed) >= 4
    ids = {r[t.headers.index("client order id")].strip() for r in t.rows}
    assert ids == {o["client_order_id"] for o in listed}
    quantities = [r[t.headers.index("qty")] for r in t.rows]
    assert {q.strip() for q in quantities} >= {"1", "3", "101"}
    assert all(q == q.strip().rjust(len(q) - 1) + " " for q in quantities), f"numbers are right-aligned: {quantities}"


def test_orders_wide_shows_every_column(stack: Stack) -> None:
    out = trader(stack.env, "orders", "--wide", columns=80)
    (t,) = tables(out.stdout)
    assert t.headers == EVERY and t.hidden == [] and "not shown" not in out.stdout


def test_positions_fits_80_columns(stack: Stack) -> None:
    data = json.loads(trader(stack.env, "positions", "--json").stdout)
    out = trader(stack.env, "positions", columns=80)
    assert out.returncode == 0, out.stderr
    (t,) = tables(out.stdout)
    every = ["agent", "code", "qty", "avg price", "cost (won)", "realised (won)", "cash (won)"]
    assert_fits(t, every, ["agent", "code", "qty", "avg price", "cash (won)"], 80)
    agents = {r[0].strip() for r in t.rows}
    assert agents == set(data["agents"])
