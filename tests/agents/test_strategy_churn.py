"""The churn test agent: many orders and cancels, a steady trickle of fills, within its cash and holdings, repeatable."""

from __future__ import annotations

from backtest.data import from_simulator
from backtest.engine import AgentSpec, run_backtest
from core.config import PROJECT_ROOT
from core.instruments import load_instruments
from agents.strategies.churn import ticks_above, ticks_below

MASTER = load_instruments(PROJECT_ROOT / "configs" / "instruments.csv")


def churn_run(cash_won: int = 20_000_000) -> object:
    data = from_simulator(["035720"], 2, 11, MASTER)
    spec = AgentSpec("churn-1", "churn", ("035720",), {"qty": 30, "ticks_away": 1, "replace_after_min": 5,
                                                       "max_position": 300}, cash_won)
    return run_backtest(data, [spec])


def test_churn_makes_many_orders_and_some_fills_and_the_same_bars_give_the_same_trades() -> None:
    first, second = churn_run(), churn_run()
    a, b = first.agents["churn-1"], second.agents["churn-1"]
    assert first.ok and a.orders >= 200 and len(a.trades) >= 20
    assert [tuple(t) for t in a.trades] == [tuple(t) for t in b.trades]


def test_churn_stays_within_its_cash_and_its_position_cap() -> None:
    result = churn_run(cash_won=3_000_000)
    agent = result.agents["churn-1"]
    assert result.ok and not agent.rejected.get("INSUFFICIENT_CASH") and not agent.rejected.get("INSUFFICIENT_SHARES")
    held = 0
    for t in agent.trades:
        held += t.qty if t.side == "buy" else -t.qty
        assert 0 <= held <= 300


def test_prices_a_few_ticks_away_stay_on_the_krx_grid() -> None:
    assert ticks_below(50_000, 2) == 49_900 and ticks_above(49_950, 2) == 50_100
    assert ticks_below(1, 3) == 1
