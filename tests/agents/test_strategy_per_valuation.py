"""PER valuation: a ladder of buys below the PER band and sells above it, on the live price and the EPS in force."""

from __future__ import annotations

import math

from agents.context import OrderIntent
from agents.strategy import FundData
from tests.agents.conftest import INSTRUMENTS, MINUTE, T0, bar, execute, make_ctx, run_bars

HYUNDAI = "005380"  # the master's EPS 45,200
PER = {"low_per": 4.5, "high_per": 6.5, "step_pct": 0.05, "max_steps": 3, "step_fraction": 0.25}


def orders(sent: list) -> list[tuple[int, str, int]]:
    return [(i, o.side, o.qty) for i, o in sent if isinstance(o, OrderIntent)]


def announce(ctx, eps: int, minute: int, date: str = "20260302") -> None:
    master = INSTRUMENTS[HYUNDAI]
    ctx.on_fundamentals(FundData(HYUNDAI, T0 + minute * MINUTE, date, eps, master.bps, master.dividend, "sim"))
    execute(ctx)


def test_per_valuation_buys_in_steps_below_the_band_and_sells_in_steps_above() -> None:
    ctx = make_ctx("per_valuation", [HYUNDAI], cash=60_000_000, params=PER)
    path = [215_000, 200_000, 200_000, 190_000, 180_000, 170_000, 250_000, 300_000, 300_000, 315_000, 330_000, 340_000]
    sent = orders(run_bars(ctx, [bar(HYUNDAI, i, c) for i, c in enumerate(path)]))
    # PER 4.42, 4.20, 3.98 cross the levels 4.5, 4.275, 4.05; then 6.64, 6.97, 7.30 cross 6.5, 6.825, 7.15
    assert [(i, side) for i, side, _ in sent] == [(1, "buy"), (3, "buy"), (4, "buy"), (7, "sell"), (9, "sell"), (10, "sell")]
    bought = sum(q for _, side, q in sent if side == "buy")
    sells = [q for _, side, q in sent if side == "sell"]
    assert sells[0] == math.ceil(bought / 3) and sum(sells) == bought
    assert ctx.position(HYUNDAI) == 0 and ctx.portfolio.realized_pnl_won > 0


def test_per_valuation_does_nothing_inside_the_band() -> None:
    ctx = make_ctx("per_valuation", [HYUNDAI], params=PER)
    assert run_bars(ctx, [bar(HYUNDAI, i, 210_000 + 5_000 * (i % 15)) for i in range(60)]) == []
    assert 4.5 < ctx.strategy.state()["per"] < 6.5


def test_an_earnings_announcement_moves_per_at_an_unchanged_price() -> None:
    # 250,000 won is PER 5.5 on the master's EPS: inside the band. Earnings up 30% make it 4.25, below the first two
    # levels (4.5 and 4.275): two buy steps, at the same price
    ctx = make_ctx("per_valuation", [HYUNDAI], cash=60_000_000, params=PER)
    assert run_bars(ctx, [bar(HYUNDAI, i, 250_000) for i in range(5)]) == []
    announce(ctx, 58_800, 5)
    sent = orders(run_bars(ctx, [bar(HYUNDAI, 6 + i, 250_000) for i in range(3)]))
    assert [side for _, side, _ in sent] == ["buy", "buy"]
    assert ctx.strategy.state()["eps"] == 58_800 and abs(ctx.strategy.state()["per"] - 250_000 / 58_800) < 1e-9
    # then a profit warning: EPS 36,000 makes the same price PER 6.94, above the levels 6.5 and 6.825: two sell steps
    announce(ctx, 36_000, 10)
    sent = orders(run_bars(ctx, [bar(HYUNDAI, 11 + i, 250_000) for i in range(3)]))
    assert [side for _, side, _ in sent] == ["sell", "sell"] and 0 < ctx.position(HYUNDAI)


def test_per_valuation_does_not_trade_without_positive_earnings() -> None:
    ctx = make_ctx("per_valuation", [HYUNDAI], params=PER)
    announce(ctx, -1_000, 0)
    assert run_bars(ctx, [bar(HYUNDAI, 1 + i, 100_000) for i in range(10)]) == []
