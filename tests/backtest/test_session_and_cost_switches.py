"""The order made on the last continuous bar, and the back-test's switches for the session rules and for costs.

With the session rules (the default) an order made on the 15:19 bar reaches
the closing auction and the agent's cancel at ``closing`` takes it back, as
live; the result counts it and the report shows it. Without them every bar is
continuous: the same order fills, and one made on the day's last bar enters at
the next day's first. ``CostModel.none()`` charges nothing, the sell tax
included.
"""

from __future__ import annotations

import datetime as dt

import pytest

from agents.strategies import STRATEGIES
from agents.strategy import Strategy
from backtest.data import MarketData, from_simulator
from backtest.engine import AgentSpec, Backtest, run_backtest
from backtest.fills import FillModel
from backtest.report import CANCELED_AT_CLOSING, refusals_by_reason, render_html
from core import krx
from core.costs import DEFAULT_COSTS, CostModel
from core.instruments import load_instruments

MASTER = load_instruments("configs/instruments.csv")
CODE = "005930"
DAY = dt.date(2026, 3, 3)
NS_PER_MIN = 60_000_000_000


def _minute(ts_ns: int) -> int:
    return ((ts_ns // NS_PER_MIN) + 9 * 60) % (24 * 60)


class _BuysOnBar(Strategy):
    """Buys one share at the market on the bars of the minutes in ``AT`` (KST minutes of the day)."""

    name = "buys_on_given_bars_for_test"
    AT: frozenset[int] = frozenset()

    def on_bar(self, ctx, bar) -> None:  # type: ignore[no-untyped-def]
        if _minute(bar.ts_ns) in self.AT:
            ctx.buy(bar.code, 1)


@pytest.fixture
def buys_on(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    def install(*minutes: int) -> str:
        monkeypatch.setitem(STRATEGIES, _BuysOnBar.name, _BuysOnBar)
        monkeypatch.setattr(_BuysOnBar, "AT", frozenset(minutes))
        return _BuysOnBar.name
    return install


LAST_CONTINUOUS = 15 * 60 + 19
AUCTION = 15 * 60 + 30


def two_days() -> MarketData:
    return from_simulator([CODE], 2, 8, MASTER, DAY)


@pytest.mark.parametrize("model", list(FillModel))
def test_an_order_on_the_last_continuous_bar_is_cancelled_at_closing_and_shown(model: FillModel, buys_on) -> None:  # type: ignore[no-untyped-def]
    name = buys_on(LAST_CONTINUOUS)
    run = Backtest(two_days(), [AgentSpec("late", name, (CODE,), {}, 10_000_000)], fill_model=model)
    result = run.run()
    assert result.ok
    agent = result.agents["late"]
    assert sorted((o.status.value, o.filled_qty) for o in run.oms.orders.values()) == [("canceled", 0), ("canceled", 0)]
    assert agent.trades == [] and agent.canceled_at_closing == 2 and not agent.refusals
    assert refusals_by_reason(result) == {CANCELED_AT_CLOSING: {"late": 2}}
    assert CANCELED_AT_CLOSING in render_html(result)


def test_without_session_rules_the_last_continuous_bar_fills_at_the_auction_bar_and_the_auction_bar_the_next_day(buys_on) -> None:  # type: ignore[no-untyped-def]
    name = buys_on(LAST_CONTINUOUS, AUCTION)
    data = two_days()
    result = run_backtest(data, [AgentSpec("late", name, (CODE,), {}, 10_000_000)], fill_model="next_open", sessions=False)
    assert result.ok
    agent = result.agents["late"]
    bars = data.bars.set_index("ts_ns")
    day_starts = [int(t) for t in data.bars.groupby(data.bars["ts_ns"].map(krx.kst_date))["ts_ns"].min()]
    fills = [(_minute(t.ts_ns), t.price) for t in agent.trades]
    first, second = (krx.market_hours(d)[1] for d in data.days)
    # day 1: the 15:19 order at the auction bar's open, the auction bar's order at day 2's first bar
    # day 2: the 15:19 order at the auction bar's open; the auction bar's order has no bar left to meet
    assert fills == [(AUCTION, int(bars.loc[first, "open"])), (9 * 60, int(bars.loc[day_starts[1], "open"])),
                     (AUCTION, int(bars.loc[second, "open"]))]
    assert not agent.refusals and agent.canceled_at_closing == 0
    assert "no closing cancel" in render_html(result)


def test_the_zero_cost_model_charges_no_commission_and_no_sell_tax() -> None:
    none = CostModel.none()
    assert none.fill_costs("sell", 70_000_000, DAY) == (0, 0)
    assert none.order_fill_costs("sell", 10_000_000, 60_000_000, DAY) == (0, 0)
    assert none.is_free and not DEFAULT_COSTS.is_free
    fee, tax = DEFAULT_COSTS.fill_costs("sell", 70_000_000, DAY)
    assert fee > 0 and tax == 70_000_000 * 2000 // 1_000_000
    assert CostModel(sell_tax=False).fill_costs("sell", 70_000_000, DAY) == (fee, 0)


@pytest.mark.parametrize("costs", [DEFAULT_COSTS, CostModel.none()], ids=["paper", "none"])
def test_a_back_test_charges_what_its_cost_model_charges(costs: CostModel) -> None:
    spec = AgentSpec("sma", "sma_cross", (CODE,), {"fast": 5, "slow": 20, "qty": 10}, 50_000_000)
    result = run_backtest(two_days(), [spec], costs=costs)
    trades = result.agents["sma"].trades
    assert any(t.side == "sell" for t in trades)
    charged = [(t.fee_won, t.tax_won) for t in trades]
    expected = [costs.fill_costs(t.side, t.qty * t.price, krx.kst_date(t.ts_ns)) for t in trades]
    assert charged == expected
    assert (sum(f + x for f, x in charged) == 0) is costs.is_free
    book = result.agents["sma"].book
    assert (book["fees_won"], book["taxes_won"]) == (sum(f for f, _ in charged), sum(x for _, x in charged))
