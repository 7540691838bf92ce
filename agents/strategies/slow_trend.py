"""Slow trend: hold a slow, steady up-trend in price backed by volume, leave when it breaks.

Every few bars the strategy fits a least-squares line to the log closes of a
long window; it enters when the slope is positive and significant (t-stat), the
fit is tight (high R-squared, small residual volatility) and volume is not
trending down significantly. It exits when the t-stat fades, or as soon as a
close falls several residual deviations below the extrapolated trend line.
A position larger than one order may be is bought and sold as TWAP children
(``ctx.trade``), within the agent's limits.

State kept across restarts and days: the bars seen, the bars since the last
fit and the fitted line (so the break rule keeps extrapolating it), and the
last fit's figures. The regression window itself is the context's bar window
(``ctx.bars``), warmed from the recorded bars at start, not saved. The trend
runs across the overnight, as in the back-tester.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import numpy as np
from pydantic import Field, model_validator

from agents.context import AgentContext
from agents.strategy import BarData, Strategy, StrategyParams, read_state


ENTRY_MINUTES = 10  # a holding larger than one order is bought as TWAP children over this many minutes
EXIT_MINUTES = 3  # and sold over this many


class SlowTrendParams(StrategyParams):
    """Regression window and cadence, significance and noise thresholds, break rule, size."""

    window: int = Field(default=120, ge=20, le=10_000)
    eval_every: int = Field(default=5, ge=1, le=10_000)
    t_entry: float = Field(default=8.0, gt=0, le=1000)
    t_exit: float = Field(default=2.0, ge=0, le=1000)
    min_r2: float = Field(default=0.8, ge=0, le=1)
    max_resid_vol: float = Field(default=0.01, gt=0, le=1)
    volume_t_min: float = Field(default=-2.0, ge=-1000, le=1000)
    break_sigmas: float = Field(default=3.0, gt=0, le=100)
    invest_fraction: float = Field(default=0.9, gt=0, le=1)

    @model_validator(mode="after")
    def _exit_below_entry(self) -> SlowTrendParams:
        if self.t_exit >= self.t_entry:
            raise ValueError(f"t_exit ({self.t_exit}) must be below t_entry ({self.t_entry})")
        return self


def _fit(y: np.ndarray) -> tuple[float, float, float, float, float]:
    """Least squares of y on 0..n-1: (intercept, slope, t-stat of slope, R-squared, residual std)."""
    n = len(y)
    x = np.arange(n, dtype=np.float64)
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    sxy = float(((x - xm) * (y - ym)).sum())
    syy = float(((y - ym) ** 2).sum())
    slope = sxy / sxx
    intercept = ym - slope * xm
    ssr = max(syy - slope * sxy, 0.0)
    s2 = ssr / (n - 2)
    se = math.sqrt(s2 / sxx)
    t = slope / se if se > 0 else (math.inf if slope > 0 else -math.inf if slope < 0 else 0.0)
    r2 = 1 - ssr / syy if syy > 0 else 0.0
    return float(intercept), slope, t, r2, math.sqrt(s2)


class SlowTrendState(msgspec.Struct, forbid_unknown_fields=True):
    """The saved cadence counters and the last fitted line."""

    bars_seen: int
    since_fit: int
    line: tuple[float, float, float] | None  # level at the fit's last bar, slope, residual std
    t_stat: float
    r2: float
    resid_vol: float
    volume_t: float


class SlowTrend(Strategy):
    """Enters significant low-noise up-trends and exits when they break."""

    name = "slow_trend"
    Params = SlowTrendParams
    params: SlowTrendParams

    def __init__(self, params: SlowTrendParams | None = None) -> None:
        super().__init__(params)
        self._seen = 0
        self._since_fit = 0
        self._line: tuple[float, float, float] | None = None  # intercept at fit's last bar, slope, resid std
        self.t_stat = 0.0
        self.r2 = 0.0
        self.resid_vol = 0.0
        self.volume_t = 0.0

    def on_bar(self, ctx: AgentContext, bar: BarData) -> None:
        p = self.params
        code = bar.code
        self._seen += 1
        self._since_fit += 1
        if self._line is not None and ctx.sellable(code) > 0:
            level, slope, sd = self._line
            expected = level + slope * self._since_fit
            if math.log(bar.close) < expected - p.break_sigmas * sd:
                if not ctx.working(code):
                    ctx.trade(code, "sell", ctx.sellable(code), bar.close, twap_minutes=EXIT_MINUTES)
                    ctx.log(f"trend broken at {bar.close}: sell")
                return
        if self._seen < p.window or self._since_fit < p.eval_every:
            return
        window = ctx.bars(code, p.window)
        if len(window.close) < p.window:
            return
        a, slope, t, r2, sd = _fit(np.log(window.close.astype(np.float64)))
        _, _, vt, _, _ = _fit(window.volume.astype(np.float64))
        self._line = (a + slope * (p.window - 1), slope, sd)
        self._since_fit = 0
        self.t_stat, self.r2, self.resid_vol, self.volume_t = t, r2, sd, vt
        if ctx.has_open_orders(code) or ctx.working(code):
            return
        held = ctx.sellable(code)
        if held > 0:
            if t < p.t_exit:
                ctx.trade(code, "sell", held, bar.close, twap_minutes=EXIT_MINUTES)
                ctx.log(f"trend faded (t={t:.1f}): sell {held}")
        elif ctx.position(code) == 0 and slope > 0 and t >= p.t_entry and r2 >= p.min_r2 and sd <= p.max_resid_vol and vt >= p.volume_t_min:
            qty = ctx.affordable_qty(code, bar.close, int(ctx.equity() * p.invest_fraction))
            if qty > 0:
                ctx.trade(code, "buy", qty, bar.close, twap_minutes=ENTRY_MINUTES)
                ctx.log(f"steady trend (t={t:.1f}, R2={r2:.2f}): buy {qty}")

    def state(self) -> dict[str, Any]:
        return {"t_stat": self.t_stat, "r2": self.r2, "resid_vol": self.resid_vol, "volume_t": self.volume_t}

    def save_state(self) -> dict[str, Any]:
        state = msgspec.structs.asdict(SlowTrendState(
            bars_seen=self._seen, since_fit=self._since_fit, line=self._line, t_stat=self.t_stat, r2=self.r2,
            resid_vol=self.resid_vol, volume_t=self.volume_t,
        ))
        state["line"] = None if self._line is None else list(self._line)  # as msgpack gives it back
        return state

    def load_state(self, state: dict[str, Any], version: int) -> None:
        s = read_state(state, version, self.state_version, SlowTrendState)
        self._seen, self._since_fit, self._line = s.bars_seen, s.since_fit, s.line
        self.t_stat, self.r2, self.resid_vol, self.volume_t = s.t_stat, s.r2, s.resid_vol, s.volume_t
