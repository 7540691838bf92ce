"""Slow trend: it holds a drift in returns, and a random walk passes its entry test at most 2% of the time.

The old rule fitted a line to log price levels and trusted the fit's
t-statistic: on a driftless random walk the levels wander, the residuals are
not independent, and such a "trend" passes far too often (spurious
regression). ``old_level_regression_passes`` keeps that rule here to show
the false-entry test below fails it.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from agents.context import OrderIntent
from agents.strategies.slow_trend import SlowTrendParams, drift_t, newey_west_lags
from backtest.data import from_simulator
from tests.agents.conftest import INSTRUMENTS, bar, make_ctx, run_bars

NAVER = "035420"
TREND = {"window": 60, "eval_every": 5, "t_entry": 2.5, "t_exit": 0.5, "break_sigmas": 2.0}


def walk(n: int, seed: int, drift: float, sd: float = 0.001, start: int = 150_000) -> list[int]:
    rng = np.random.default_rng(seed)
    log_px = math.log(start) + np.cumsum(drift + sd * rng.standard_normal(n))
    return [int(round(math.exp(x), -2)) for x in log_px]


def old_level_regression_passes(log_close: np.ndarray) -> bool:
    """The former entry rule: OLS of log price on time, t >= 8, R-squared >= 0.8, residual sd <= 1%."""
    n = len(log_close)
    x = np.arange(n, dtype=np.float64)
    slope, intercept = np.polyfit(x, log_close, 1)
    resid = log_close - (intercept + slope * x)
    se = math.sqrt(resid @ resid / (n - 2) / ((x - x.mean()) ** 2).sum())
    r2 = 1 - resid.var() / log_close.var()
    return slope / se >= 8.0 and r2 >= 0.8 and resid.std() <= 0.01


def test_the_hac_standard_error_widens_with_autocorrelated_returns() -> None:
    rng = np.random.default_rng(1)
    white = rng.standard_normal(5000)
    smooth = np.convolve(white, np.ones(5) / 5, mode="valid")  # positively autocorrelated
    _, se_white, _ = drift_t(white)
    assert se_white == pytest.approx(white.std() / math.sqrt(len(white)), rel=0.1)
    _, se_smooth, _ = drift_t(smooth)
    assert se_smooth > 1.8 * smooth.std() / math.sqrt(len(smooth))
    assert newey_west_lags(100) == 4 and newey_west_lags(240) == 4


def test_slow_trend_enters_a_drift_and_sells_when_the_trend_breaks() -> None:
    ctx = make_ctx("slow_trend", [NAVER], cash=30_000_000, params=TREND)
    rising = walk(80, 3, drift=0.0006)  # t of about 0.6 / 1 x sqrt(60) = 4.6
    sent = [(i, o) for i, o in run_bars(ctx, [bar(NAVER, i, c) for i, c in enumerate(rising)]) if isinstance(o, OrderIntent)]
    [(i, buy)] = sent
    assert buy.side == "buy" and 60 <= i < 80 and ctx.position(NAVER) == buy.qty
    assert ctx.strategy.state()["t_stat"] >= 2.5
    crash = [bar(NAVER, 80 + k, int(rising[-1] * (1 - 0.01 * (k + 1)))) for k in range(5)]
    sent = [o for _, o in run_bars(ctx, crash) if isinstance(o, OrderIntent)]
    assert [(o.side, o.qty) for o in sent] == [("sell", buy.qty)]
    assert ctx.position(NAVER) == 0


def test_slow_trend_leaves_a_random_walk_alone() -> None:
    ctx = make_ctx("slow_trend", [NAVER], params=TREND)
    prices = walk(400, 11, drift=0.0)
    assert run_bars(ctx, [bar(NAVER, i, c) for i, c in enumerate(prices)]) == []


def test_a_drift_too_small_to_pay_the_round_trip_is_not_entered() -> None:
    # very steady, so significant, but 0.002% a bar over 60 bars is 0.12%: less than commission, tax and spread
    ctx = make_ctx("slow_trend", [NAVER], params=TREND)
    prices = walk(120, 5, drift=0.00002, sd=0.00001, start=1_500_000)
    assert run_bars(ctx, [bar(NAVER, i, c) for i, c in enumerate(prices)]) == []
    assert ctx.strategy.state()["t_stat"] > 2.5


@pytest.fixture(scope="module")
def random_walk_windows() -> list[np.ndarray]:
    """Log closes of 240-return windows, every 5 bars, of the null world's driftless, heavy-tailed, clustered prices."""
    data = from_simulator(["035420", "000660", "035720"], 30, 11, INSTRUMENTS, dt.date(2025, 3, 4), world="null")
    window = SlowTrendParams().window
    out = []
    for _, g in data.bars.groupby("code"):
        lc = np.log(g["close"].to_numpy(dtype=np.float64))
        out += [lc[s:s + window + 1] for s in range(0, len(lc) - window - 1, 5)]
    return out


def test_on_a_random_walk_at_most_2_percent_of_windows_pass_the_entry_test(random_walk_windows: list[np.ndarray]) -> None:
    p = SlowTrendParams()
    passed = sum(drift_t(np.diff(w))[2] >= p.t_entry for w in random_walk_windows)
    assert len(random_walk_windows) > 5000
    assert passed / len(random_walk_windows) <= 0.02


def test_the_level_regression_it_replaced_passes_a_random_walk_too_often(random_walk_windows: list[np.ndarray]) -> None:
    # the same windows through the former rule: the test above would fail it
    passed = sum(old_level_regression_passes(w[:-1]) for w in random_walk_windows)
    assert passed / len(random_walk_windows) > 0.02
