"""Slow trend: hold a drift in returns that a random walk would not show, leave when it fades or breaks.

Hypothesis: some stretches of a price carry a persistent drift (flows that
keep buying, news absorbed slowly), and a drift that is there continues for a
while. The test is on the returns, not on the price level: a line fitted to
log prices of a random walk looks "significant" far too often (spurious
regression: the levels are not independent, so the OLS t-statistic has no
t distribution), whereas the mean of one-bar log returns of a driftless walk
is zero. Every ``eval_every`` bars the strategy takes the mean of the last
``window`` one-bar log returns and its heteroskedasticity and autocorrelation
consistent (Newey-West, Bartlett kernel) standard error; it enters when the
t-statistic is at least ``t_entry`` (one-sided: 2.5 lets about 0.6% of
random-walk windows through with normal errors; on the null world's
heavy-tailed, clustered one-minute prices about 0.1% of 240-return windows
pass, where the level regression it replaces passed about 5%) and the drift
over a window's length beats the round trip's costs ``cost_multiple`` times. It exits when
the t-statistic falls below ``t_exit``, or when a close falls
``break_sigmas`` standard deviations of a window's return below the highest
close since entry (the trend broke).

A position larger than one order is bought and sold as TWAP children
(``ctx.trade``), within the agent's limits.

State kept across restarts and days: the bars seen, the bars since the last
test, the last test's figures and the peak since entry. The return window
itself is the context's bar window (``ctx.bars``), warmed from the recorded
bars at start, not saved. The returns run across the overnight, as in the
back-tester.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import numpy as np
from pydantic import Field, model_validator

from agents.context import AgentContext
from agents.strategy import BarData, FillData, Strategy, StrategyParams, read_state
from core import krx
from core.messages import SessionPhase

ENTRY_MINUTES = 10  # a holding larger than one order is bought as TWAP children over this many minutes
EXIT_MINUTES = 3  # and sold over this many


class SlowTrendParams(StrategyParams):
    """Return window and cadence, entry and exit t-statistics, cost cover, break rule, size."""

    window: int = Field(default=240, ge=30, le=1000)
    eval_every: int = Field(default=5, ge=1, le=10_000)
    t_entry: float = Field(default=2.5, gt=0, le=100)
    t_exit: float = Field(default=0.5, ge=-100, le=100)
    cost_multiple: float = Field(default=1.0, ge=0, le=100)
    break_sigmas: float = Field(default=2.0, gt=0, le=100)
    invest_fraction: float = Field(default=0.9, gt=0, le=1)

    @model_validator(mode="after")
    def _exit_below_entry(self) -> SlowTrendParams:
        if self.t_exit >= self.t_entry:
            raise ValueError(f"t_exit ({self.t_exit}) must be below t_entry ({self.t_entry})")
        return self


def newey_west_lags(n: int) -> int:
    """The Bartlett kernel's lag truncation for ``n`` observations: floor(4 (n / 100) ** (2 / 9))."""
    return int(4 * (n / 100) ** (2 / 9))


def drift_t(returns: np.ndarray, lags: int | None = None) -> tuple[float, float, float]:
    """(mean, Newey-West standard error of the mean, t-statistic) of a series of returns."""
    n = len(returns)
    mean = float(returns.mean())
    e = returns - mean
    lags = newey_west_lags(n) if lags is None else lags
    lrv = float(e @ e) / n
    for j in range(1, min(lags, n - 1) + 1):
        lrv += 2 * (1 - j / (lags + 1)) * float(e[j:] @ e[:-j]) / n
    se = math.sqrt(max(lrv, 0.0) / n)
    t = mean / se if se > 0 else 0.0
    return mean, se, t


class SlowTrendState(msgspec.Struct, forbid_unknown_fields=True):
    """The saved cadence counters, the last test and the peak since entry."""

    bars_seen: int
    since_test: int
    drift: float
    drift_se: float
    t_stat: float
    vol: float  # standard deviation of one-bar log returns in the last window
    peak: int


class SlowTrend(Strategy):
    """Enters a drift in returns that is significant under a HAC standard error; exits when it fades or breaks."""

    name = "slow_trend"
    Params = SlowTrendParams
    params: SlowTrendParams
    state_version = 2

    def __init__(self, params: SlowTrendParams | None = None) -> None:
        super().__init__(params)
        self._seen = 0
        self._since_test = 0
        self.drift = 0.0
        self.drift_se = 0.0
        self.t_stat = 0.0
        self.vol = 0.0
        self.peak = 0

    def on_bar(self, ctx: AgentContext, bar: BarData) -> None:
        p = self.params
        code = bar.code
        self._seen += 1
        self._since_test += 1
        held = ctx.sellable(code)
        trading = ctx.phase in (None, SessionPhase.OPEN) and not ctx.working(code)
        if held > 0 and self.peak > 0 and self.vol > 0 and trading:
            self.peak = max(self.peak, bar.close)
            floor = math.log(self.peak) - p.break_sigmas * self.vol * math.sqrt(p.window)
            if math.log(bar.close) < floor:
                ctx.trade(code, "sell", held, bar.close, twap_minutes=EXIT_MINUTES)
                ctx.log(f"trend broken at {bar.close} (peak {self.peak}): sell {held}")
                return
        if self._seen <= p.window or self._since_test < p.eval_every:
            return
        closes = ctx.bars(code, p.window + 1).close
        if len(closes) < p.window + 1:
            return
        returns = np.diff(np.log(closes.astype(np.float64)))
        self.drift, self.drift_se, self.t_stat = drift_t(returns)
        self.vol = float(returns.std())
        self._since_test = 0
        if ctx.has_open_orders(code) or not trading:
            return
        if held > 0:
            if self.t_stat < p.t_exit:
                ctx.trade(code, "sell", held, bar.close, twap_minutes=EXIT_MINUTES)
                ctx.log(f"drift faded (t={self.t_stat:.2f}): sell {held}")
        elif ctx.position(code) == 0 and self.t_stat >= p.t_entry and self._edge_covers_costs(ctx, code, bar.close):
            qty = ctx.affordable_qty(code, bar.close, int(ctx.equity() * p.invest_fraction))
            if qty > 0:
                ctx.trade(code, "buy", qty, bar.close, twap_minutes=ENTRY_MINUTES)
                ctx.log(f"drift {self.drift:.2e}/bar, HAC t={self.t_stat:.2f}: buy {qty}")

    def _edge_covers_costs(self, ctx: AgentContext, code: str, price: int) -> bool:
        """Whether the drift over one window's length pays a round trip (commission twice, tax, a tick each way)."""
        f, t = ctx.cost_rates(code)
        spread = 2 * krx.tick_size(price) / price
        return self.drift * self.params.window >= self.params.cost_multiple * (2 * f + t + spread)

    def on_fill(self, ctx: AgentContext, fill: FillData) -> None:
        if fill.side == "buy":
            self.peak = max(self.peak, fill.price)
        elif ctx.position(fill.code) == 0:
            self.peak = 0

    def state(self) -> dict[str, Any]:
        return {"t_stat": self.t_stat, "drift": self.drift, "drift_se": self.drift_se, "vol": self.vol, "peak": self.peak}

    def save_state(self) -> dict[str, Any]:
        return msgspec.structs.asdict(SlowTrendState(
            bars_seen=self._seen, since_test=self._since_test, drift=self.drift, drift_se=self.drift_se,
            t_stat=self.t_stat, vol=self.vol, peak=self.peak,
        ))

    def load_state(self, state: dict[str, Any], version: int) -> None:
        s = read_state(state, version, self.state_version, SlowTrendState)
        self._seen, self._since_test = s.bars_seen, s.since_test
        self.drift, self.drift_se, self.t_stat, self.vol, self.peak = s.drift, s.drift_se, s.t_stat, s.vol, s.peak
