"""Volatility tracker: adds below value (the EPS in force times a fair PER) as volatility calms, cuts on a spike."""

from __future__ import annotations

from agents.context import OrderIntent
from agents.strategy import FundData
from tests.agents.conftest import INSTRUMENTS, MINUTE, T0, bar, execute, make_ctx, run_bars

COMMON = "005930"  # the master's EPS 4,950
VOL = {"fair_per": 12.0, "warmup": 20, "fast_halflife": 5, "slow_halflife": 40, "target_vol": 0.25, "spike_ratio": 1.5}


def orders(sent: list) -> list[tuple[int, str, int]]:
    return [(i, o.side, o.qty) for i, o in sent if isinstance(o, OrderIntent)]


def swings(n: int, low: int, high: int, start: int) -> list:
    return [bar(COMMON, start + i, low if i % 2 == 0 else high) for i in range(n)]


def test_volatility_tracker_adds_below_value_as_volatility_falls_and_cuts_on_a_spike() -> None:
    # value = EPS 4,950 x 12 = 59,400; the price swings around 55,000, below it
    ctx = make_ctx("volatility_tracker", [COMMON], params=VOL)
    assert orders(run_bars(ctx, swings(40, 55_000, 55_600, 0))) == []  # volatility high and rising: nothing to add
    calm = orders(run_bars(ctx, swings(40, 55_000, 55_100, 40)))
    assert calm and {side for _, side, _ in calm} == {"buy"}
    held = ctx.position(COMMON)
    assert held > 0 and held * 55_100 <= ctx.equity() * 0.9  # never beyond the cap
    spike = orders(run_bars(ctx, swings(6, 55_000, 57_000, 80)))
    assert spike and spike[0][1] == "sell" and ctx.position(COMMON) < held


def test_volatility_tracker_does_not_buy_above_value() -> None:
    ctx = make_ctx("volatility_tracker", [COMMON], params={**VOL, "fair_per": 10.0})  # value 49,500
    assert run_bars(ctx, swings(40, 55_000, 55_600, 0) + swings(40, 55_000, 55_100, 40)) == []
    assert ctx.strategy.state()["vol_fast"] < ctx.strategy.state()["vol_slow"]


def test_an_announcement_that_lifts_value_above_the_price_lets_it_add() -> None:
    # value 49,500 is under the price until earnings of 5,000 x 1.2 make it 60,000
    ctx = make_ctx("volatility_tracker", [COMMON], params={**VOL, "fair_per": 10.0})
    assert run_bars(ctx, swings(40, 55_000, 55_600, 0) + swings(20, 55_000, 55_100, 40)) == []
    master = INSTRUMENTS[COMMON]
    ctx.on_fundamentals(FundData(COMMON, T0 + 60 * MINUTE, "20260302", 6_000, master.bps, master.dividend, "sim"))
    execute(ctx)
    calm = orders(run_bars(ctx, swings(20, 55_000, 55_100, 61)))
    assert calm and {side for _, side, _ in calm} == {"buy"}
    assert ctx.strategy.state()["value"] == 60_000
