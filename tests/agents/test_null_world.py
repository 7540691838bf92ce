"""The null world: a market without the effects the strategies look for, where none may find money.

Each strategy runs as its roster agent does (``backtest.strategy_reports.CASES``:
the same codes and params as its report, a few days a run) over 20 seeds of
``from_simulator(world="null")``: prices a random walk of the same volatility,
flows and fundamentals independent of future prices, the preferred discount
without mean reversion. Its mean net return after costs must not be positive
beyond two standard errors. Each must also trade there (a strategy that never
trades would pass without being tested).

Losing the costs is what a strategy with no edge does here, sound or not: the
former slow trend (t-statistic of a line through price levels) and the
former foreign follower (summing running totals as if each were new) both
lose about 1% a run in this world and pass this test too; what shows them
wrong is where they enter (``test_strategy_slow_trend``, the false-entry
rate of a random walk) and what they read (``test_strategy_foreign_follower``).
What this test catches is a strategy that earns where nothing can be earned:
one that sees the future, as ``Clairvoyant`` below does, fails it.
"""

from __future__ import annotations

from typing import Any

import pytest

from agents.context import AgentContext
from agents.strategies import STRATEGIES
from agents.strategy import BarData, Strategy
from backtest import strategy_reports
from backtest.data import MarketData
from backtest.engine import AgentSpec
from backtest.strategy_reports import CASES, roster_spec, run_world, world_seeds
from tests.agents.conftest import INSTRUMENTS

SEEDS = world_seeds(20)


@pytest.mark.parametrize("case", CASES, ids=[c.strategy for c in CASES])
def test_no_strategy_finds_money_in_the_null_world(case: strategy_reports.Case) -> None:
    runs = run_world(roster_spec(case), "null", case.test_days, SEEDS, INSTRUMENTS)
    assert sum(runs.fills) > 0, f"{case.strategy} never traded in the null world: the test says nothing of it"
    assert not runs.finds_money_in_noise, (
        f"{case.strategy} earned {runs.mean:+.3%} a run in the null world, standard error {runs.standard_error:.3%}")


class Clairvoyant(Strategy):
    """A test strategy that reads the close 30 bars ahead: buys before a rise, sells before a fall."""

    name = "clairvoyant"
    future: dict[tuple[str, int], int] = {}  # (code, ts_ns) -> the close 30 bars later

    def on_bar(self, ctx: AgentContext, bar: BarData) -> None:
        ahead = self.future.get((bar.code, bar.ts_ns))
        if ahead is None or ctx.has_open_orders(bar.code):
            return
        if ahead > bar.close * 1.01 and ctx.position(bar.code) == 0:
            ctx.buy(bar.code, ctx.max_order_qty(bar.code, "buy", bar.close), bar.close)
        elif ahead < bar.close and ctx.sellable(bar.code) > 0:
            ctx.sell(bar.code, ctx.sellable(bar.code), bar.close)


def test_a_strategy_that_sees_the_future_fails_the_null_test(monkeypatch: pytest.MonkeyPatch) -> None:
    real = strategy_reports.from_simulator

    def remembering(*args: Any, **kwargs: Any) -> MarketData:
        data = real(*args, **kwargs)
        for code, g in data.bars.groupby("code"):
            ts, close = g["ts_ns"].tolist(), g["close"].tolist()
            Clairvoyant.future.update({(str(code), t): c for t, c in zip(ts, close[30:])})
        return data

    monkeypatch.setattr(strategy_reports, "from_simulator", remembering)
    monkeypatch.setitem(STRATEGIES, "clairvoyant", Clairvoyant)
    monkeypatch.setattr(Clairvoyant, "future", {})
    runs = run_world(AgentSpec("seer", "clairvoyant", ("035420",), {}, 30_000_000), "null", 3, SEEDS, INSTRUMENTS)
    assert runs.finds_money_in_noise and runs.mean > 0
