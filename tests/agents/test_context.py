"""The agent context: order checks, client order ids, error containment, and the shell's entry points."""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.context import (
    BAD_PRICE,
    BAD_QTY,
    HALTED_BY_ERRORS,
    INSUFFICIENT_CASH,
    INSUFFICIENT_HOLDING,
    UNKNOWN_CODE,
    AgentContext,
    CancelIntent,
    OrderIntent,
)
from agents.strategy import BarData, FillData, OrderEventData, Strategy
from core.messages import OrderRequest, SessionPhase
from core.portfolio import Portfolio
from tests.agents.conftest import INSTRUMENTS, MINUTE, T0, bar, execute, make_ctx

S = "005930"


class Scripted(Strategy):
    """A strategy whose on_bar runs whatever the test puts in ``action``."""

    name = "scripted"

    def __init__(self) -> None:
        super().__init__()
        self.action: Any = None
        self.bars_seen = 0

    def on_bar(self, ctx: AgentContext, b: BarData) -> None:
        self.bars_seen += 1
        if self.action:
            self.action(ctx, b)


def scripted_ctx(cash: int = 10_000_000, **kw: Any) -> tuple[AgentContext, Scripted]:
    strat = Scripted()
    return AgentContext("ag", [S], strat, Portfolio(cash), INSTRUMENTS, **kw), strat


def test_client_order_ids_carry_agent_and_market_date_and_continue_after_restart() -> None:
    ctx = make_ctx("sma_cross", [S])
    ctx.on_bar(bar(S, 0, 71_000))
    assert ctx.buy(S, 1, 71_000).client_order_id == "t1-20260302-1"
    assert ctx.buy(S, 1, 71_000).client_order_id == "t1-20260302-2"
    restarted = make_ctx("sma_cross", [S])
    restarted.resume_order_seq("20260302", 7)
    restarted.on_bar(bar(S, 0, 71_000))
    assert restarted.buy(S, 1, 71_000).client_order_id == "t1-20260302-8"
    restarted.on_session(SessionPhase.PRE_OPEN, T0 + 86_400 * 10**9, "20260303")
    assert restarted.buy(S, 1, 71_000).client_order_id == "t1-20260303-1"


def test_limit_prices_are_rounded_for_the_side_and_clipped_to_the_daily_limits() -> None:
    ctx, _ = scripted_ctx(cash=100_000_000)
    ctx.portfolio.set_start_holding(S, 100, 70_000)
    assert ctx.buy(S, 1, 71_050.5).price == 71_100
    assert ctx.sell(S, 1, 71_099).price == 71_000
    assert ctx.buy(S, 1, 200_000).price == 92_300  # upper limit of a 71,000 base
    assert ctx.sell(S, 1, 10_000).price == 49_700  # lower limit
    market = ctx.buy(S, 2)
    assert (market.order_type, market.price) == ("market", 0)
    assert isinstance(market.to_request(), OrderRequest)


def test_bad_orders_are_refused_with_a_reason_and_never_reach_the_outbox() -> None:
    ctx, _ = scripted_ctx(cash=1_000_000)
    assert ctx.buy("000660", 1, 100_000).reason_code == UNKNOWN_CODE
    assert ctx.buy(S, 0, 71_000).reason_code == BAD_QTY
    assert ctx.buy(S, 1.5, 71_000).reason_code == BAD_QTY  # type: ignore[arg-type]
    assert ctx.buy(S, 1, float("nan")).reason_code == BAD_PRICE
    assert ctx.buy(S, 1, -5).reason_code == BAD_PRICE
    assert ctx.buy(S, 15, 71_000).reason_code == INSUFFICIENT_CASH
    assert ctx.sell(S, 1, 71_000).reason_code == INSUFFICIENT_HOLDING
    assert ctx.drain_outbox() == []


def test_a_sell_may_not_exceed_the_holding_less_open_sells() -> None:
    ctx, _ = scripted_ctx()
    ctx.portfolio.set_start_holding(S, 10, 70_000)
    assert ctx.sell(S, 6, 72_000).ok
    refused = ctx.sell(S, 5, 72_000)
    assert refused.reason_code == INSUFFICIENT_HOLDING
    assert ctx.sell(S, 4, 72_000).ok


def test_open_buys_reduce_the_cash_available_and_a_reject_gives_it_back() -> None:
    ctx, _ = scripted_ctx(cash=1_000_000)
    order = ctx.buy(S, 10, 71_000)
    assert ctx.cash() == 1_000_000 - 710_000 - 101
    assert not ctx.buy(S, 5, 71_000).ok
    ctx.on_order_event(OrderEventData(order.client_order_id, S, "buy", "rejected", T0, reason_code="RISK"))
    assert ctx.cash() == 1_000_000
    assert ctx.open_orders() == []


def test_fills_through_the_context_update_the_book_once() -> None:
    ctx, _ = scripted_ctx()
    order = ctx.buy(S, 10, 71_000)
    fill = FillData("e1", order.client_order_id, S, "buy", 10, 71_000, 101, 0, T0)
    assert ctx.on_fill(fill)
    assert not ctx.on_fill(fill)
    assert (ctx.position(S), ctx.avg_price(S)) == (10, 71_000)
    assert ctx.cash() == 10_000_000 - 710_000 - 101


def test_strategy_errors_are_contained_and_enough_in_a_row_stop_trading() -> None:
    ctx, strat = scripted_ctx(max_consecutive_errors=3)

    def boom(c: AgentContext, b: BarData) -> None:
        raise ValueError("bad maths")

    strat.action = boom
    ctx.on_bar(bar(S, 0, 71_000))
    ctx.on_bar(bar(S, 1, 71_000))
    strat.action = None
    ctx.on_bar(bar(S, 2, 71_000))  # a success resets the run
    assert (ctx.errors_total, ctx.consecutive_errors, ctx.halted_by_errors) == (2, 0, False)
    strat.action = boom
    for i in range(3, 6):
        ctx.on_bar(bar(S, i, 71_000))
    assert ctx.halted_by_errors
    assert "ValueError: bad maths" in ctx.last_error
    [alert] = ctx.drain_alerts()
    assert (alert.level, alert.kind) == ("critical", "strategy_halted")
    assert ctx.buy(S, 1, 71_000).reason_code == HALTED_BY_ERRORS
    seen = strat.bars_seen
    ctx.on_bar(bar(S, 9, 72_000))
    assert strat.bars_seen == seen  # no longer called
    assert ctx.last_price(S) == 72_000  # but the book is still marked
    assert any("bad maths" in line for _, line in ctx.drain_logs())


def test_closing_cancels_what_is_open() -> None:
    ctx, _ = scripted_ctx()
    ctx.buy(S, 1, 70_000)
    ctx.buy(S, 1, 69_000)
    ctx.drain_outbox()
    ctx.on_session(SessionPhase.CLOSING, T0 + 380 * MINUTE)
    cancels = execute(ctx)
    assert len(cancels) == 2 and all(isinstance(c, CancelIntent) for c in cancels)
    assert ctx.open_orders() == [] and ctx.cash() == 10_000_000


def test_bars_come_back_as_arrays_and_history_is_bounded() -> None:
    ctx, _ = scripted_ctx(history=50)
    for i in range(500):
        ctx.on_bar(BarData(S, T0 + i * MINUTE, 100 + i, 101 + i, 99 + i, 100 + i, i))
    window = ctx.bars(S, 20)
    assert isinstance(window.close, np.ndarray) and window.close.dtype == np.int64
    assert window.close.tolist() == list(range(580, 600))
    assert window.volume[-1] == 499
    assert ctx.bar_count(S) <= 100
    assert len(ctx.bars(S, 10_000).close) == ctx.bar_count(S)
    assert ctx.now() == T0 + 499 * MINUTE


def test_events_for_other_codes_are_ignored_and_counted() -> None:
    ctx, strat = scripted_ctx()
    ctx.on_bar(bar("000660", 0, 178_000))
    assert strat.bars_seen == 0 and ctx.ignored_events == 1


def test_status_is_plain_data() -> None:
    ctx = make_ctx("sma_cross", [S])
    ctx.on_bar(bar(S, 0, 71_000))
    status = ctx.status()
    assert status["strategy"] == "sma_cross" and status["book"]["cash_won"] == 100_000_000
    assert isinstance(status["strategy_state"], dict)


def test_intents_are_order_or_cancel_records() -> None:
    ctx, _ = scripted_ctx()
    o = ctx.buy(S, 1, 71_000)
    c = ctx.cancel(o.client_order_id)
    assert [type(i) for i in ctx.drain_outbox()] == [OrderIntent, CancelIntent]
    assert c.to_request().client_order_id == o.client_order_id
    assert not ctx.cancel(o.client_order_id).ok  # already being cancelled


def test_a_book_rebuilt_from_a_sync_replaces_the_old_one_and_keeps_the_limits() -> None:
    ctx, _ = scripted_ctx()
    order = ctx.buy(S, 10, 71_000)
    fill = FillData("e1", order.client_order_id, S, "buy", 10, 71_000, 101, 0, T0)
    rebuilt = Portfolio.rebuild(10_000_000, {}, [], [fill])
    ctx.load_book(rebuilt)
    assert ctx.position(S) == 10
    ctx.on_bar(bar(S, 1, 72_000))
    assert ctx.portfolio.marks[S] == 72_000
    assert ctx.buy(S, 1).ok  # a market buy still finds today's upper limit
