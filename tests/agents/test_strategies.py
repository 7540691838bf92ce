"""The strategy registry, and sma_cross against a scenario built to trigger its principle and one built not to.

Each of the other strategies has its own file (``test_strategy_<name>.py``):
a scenario where its effect is there and it trades, and ones where it is not
and it stays out. Strategies run through the real AgentContext and
Portfolio; the orders they place are read from the outbox, executed at their
price, and the fills come back through the context into the book.
"""

from __future__ import annotations


import numpy as np
import pytest

from agents.context import OrderIntent
from agents.strategy import STRATEGIES, ParamsError, get_strategy
from tests.agents.conftest import bar, make_ctx, run_bars

COMMON = "005930"


def orders(sent: list) -> list[tuple[int, str, str, int, int]]:
    """(bar index, side, code, qty, price) of the order intents sent."""
    return [(i, o.side, o.code, o.qty, o.price) for i, o in sent if isinstance(o, OrderIntent)]


def test_every_strategy_is_registered_with_validated_params() -> None:
    assert set(STRATEGIES) == {
        "pair_arbitrage", "foreign_follower", "volatility_tracker", "volume_trigger", "per_valuation", "slow_trend", "sma_cross",
        "churn",
    }
    for name, cls in STRATEGIES.items():
        assert get_strategy(name) is cls and cls.__doc__ and cls.__module__.startswith("agents.strategies.")
        assert cls.from_params({}).params == cls.Params()
    with pytest.raises(ParamsError, match="qty"):
        get_strategy("sma_cross").from_params({"qty": -1})
    with pytest.raises(KeyError):
        get_strategy("martingale")


# --- sma_cross ------------------------------------------------------------------


def test_sma_cross_buys_the_cross_up_and_sells_the_cross_down() -> None:
    ctx = make_ctx("sma_cross", [COMMON], params={"fast": 3, "slow": 6, "qty": 100})
    closes = [70_000 - 100 * i for i in range(10)] + [69_100 + 200 * i for i in range(10)] + [70_900 - 300 * i for i in range(10)]
    sent = orders(run_bars(ctx, [bar(COMMON, i, c) for i, c in enumerate(closes)]))
    assert [(side, qty) for _, side, _, qty, _ in sent] == [("buy", 100), ("sell", 100)]
    (ib, _, _, _, pb), (is_, _, _, _, ps) = sent
    assert pb == closes[ib] and ps == closes[is_]  # limit at the signal bar's close
    assert ctx.position(COMMON) == 0 and ctx.portfolio.realized_pnl_won != 0
    state = ctx.strategy.state()
    assert state["sma_slow"] == pytest.approx(np.mean(closes[-6:]))
    assert state["sma_fast"] == pytest.approx(np.mean(closes[-3:]))


def test_sma_cross_stays_out_of_a_flat_market() -> None:
    ctx = make_ctx("sma_cross", [COMMON], params={"fast": 3, "slow": 6})
    assert run_bars(ctx, [bar(COMMON, i, 70_000) for i in range(50)]) == []


def test_sma_cross_market_orders_when_asked() -> None:
    ctx = make_ctx("sma_cross", [COMMON], params={"fast": 2, "slow": 4, "order_type": "market"})
    closes = [70_000, 69_900, 69_800, 69_700, 69_600, 70_000, 70_400]
    sent = run_bars(ctx, [bar(COMMON, i, c) for i, c in enumerate(closes)])
    assert [(o.side, o.order_type, o.price) for _, o in sent] == [("buy", "market", 0)]
    assert ctx.position(COMMON) == 100
