"""Volatility tracker: size the holding to a volatility target, adding only below value as volatility calms.

Hypothesis: two effects. Volatility clusters (a calm stretch tends to stay
calm, a spike to last), so a holding sized to a volatility target keeps its
risk steady; and a price is pulled toward a multiple of its earnings, so a
stock bought below that value earns the pull. Where the price takes no
notice of earnings, the value rule earns nothing and only the risk sizing
remains.

The value anchor is the EPS in force times a fair PER (or the BPS times a
fair PBR when earnings are not positive), from live fundamentals
(``agents.strategies.valuation``: the latest announcement heard, else the
instrument master's), so it moves with each announcement. Realised
volatility is tracked as fast and slow exponential averages of squared
one-bar log returns; the target holding is the equity times target
volatility over fast volatility (capped). The strategy adds toward the
target only while the price is below value and volatility is falling, and
cuts down to the target when volatility spikes above its slow average. Each
order is sized within the agent's per-order limits (``ctx.max_order_qty``):
a larger step is taken over the following bars, one order at a time.

State kept across restarts and days: both exponential averages of squared
returns, the previous close, the returns seen (the warm-up) and the last
figures shown. The overnight return counts as one more return, as in the
back-tester: nothing resets per day.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
from pydantic import Field, model_validator

from agents.context import AgentContext
from agents.strategies.valuation import live_fundamentals
from agents.strategy import BarData, Strategy, StrategyParams, read_state
from core.messages import SessionPhase


class VolatilityTrackerParams(StrategyParams):
    """Value anchor, volatility target and averaging, spike ratio, caps and bands."""

    fair_per: float = Field(default=12.0, gt=0, le=1000)
    fair_pbr: float = Field(default=1.0, gt=0, le=100)
    value_discount: float = Field(default=0.0, ge=0, lt=1)
    target_vol: float = Field(default=0.25, gt=0, le=5)
    bars_per_year: int = Field(default=250 * 380, ge=1)
    fast_halflife: int = Field(default=30, ge=1, le=100_000)
    slow_halflife: int = Field(default=240, ge=2, le=1_000_000)
    spike_ratio: float = Field(default=1.5, gt=1, le=100)
    max_weight: float = Field(default=0.9, gt=0, le=1)
    band: float = Field(default=0.1, ge=0, lt=1)
    warmup: int = Field(default=60, ge=2, le=1_000_000)

    @model_validator(mode="after")
    def _fast_faster(self) -> VolatilityTrackerParams:
        if self.fast_halflife >= self.slow_halflife:
            raise ValueError(f"fast_halflife ({self.fast_halflife}) must be shorter than slow_halflife ({self.slow_halflife})")
        return self


class VolatilityTrackerState(msgspec.Struct, forbid_unknown_fields=True):
    """The saved volatility averages and the previous close."""

    var_fast: float
    var_slow: float
    prev_close: int
    returns_seen: int
    vol_fast: float
    vol_slow: float
    value: float
    target_won: int


class VolatilityTracker(Strategy):
    """Volatility-targeted holding that adds below value on calm and cuts on spikes."""

    name = "volatility_tracker"
    Params = VolatilityTrackerParams
    params: VolatilityTrackerParams

    def __init__(self, params: VolatilityTrackerParams | None = None) -> None:
        super().__init__(params)
        p = self.params
        self._a_fast = 1 - 0.5 ** (1 / p.fast_halflife)
        self._a_slow = 1 - 0.5 ** (1 / p.slow_halflife)
        self._var_fast = 0.0
        self._var_slow = 0.0
        self._prev = 0
        self._n = 0
        self.vol_fast = 0.0
        self.vol_slow = 0.0
        self.value = 0.0
        self.target_won = 0

    def value_of(self, ctx: AgentContext, code: str) -> float:
        """The value anchor of a code from the fundamentals in force (0 if unknown)."""
        fund = live_fundamentals(ctx, code)
        if fund is None:
            return 0.0
        if fund.eps > 0:
            return fund.eps * self.params.fair_per
        return max(fund.bps, 0) * self.params.fair_pbr

    def on_bar(self, ctx: AgentContext, bar: BarData) -> None:
        p = self.params
        close = bar.close
        if self._prev > 0 and close > 0:
            r2 = math.log(close / self._prev) ** 2
            self._var_fast += self._a_fast * (r2 - self._var_fast)
            self._var_slow += self._a_slow * (r2 - self._var_slow)
            self._n += 1
        self._prev = close
        if self._n < p.warmup:
            return
        self.vol_fast = math.sqrt(self._var_fast * p.bars_per_year)
        self.vol_slow = math.sqrt(self._var_slow * p.bars_per_year)
        code = bar.code
        self.value = self.value_of(ctx, code)
        if self.vol_fast <= 0 or ctx.open_orders(code) or ctx.phase not in (None, SessionPhase.OPEN):
            return
        weight = min(p.max_weight, p.target_vol / self.vol_fast)
        self.target_won = target = int(ctx.equity() * weight)
        current = ctx.position(code) * close
        if self.vol_fast > p.spike_ratio * self.vol_slow:
            if current > target * (1 + p.band):
                qty = min(ctx.max_order_qty(code, "sell", close), math.ceil((current - target) / close))
                if qty > 0:
                    ctx.sell(code, qty, close)
                    ctx.log(f"volatility spike {self.vol_fast:.2f} vs {self.vol_slow:.2f}: sell {qty}")
        elif self.vol_fast < self.vol_slow and close < self.value * (1 - p.value_discount) and current < target * (1 - p.band):
            qty = min(ctx.affordable_qty(code, close, target - current), ctx.max_order_qty(code, "buy", close))
            if qty > 0:
                ctx.buy(code, qty, close)
                ctx.log(f"below value {self.value:.0f}, volatility falling: buy {qty}")

    def state(self) -> dict[str, Any]:
        return {
            "vol_fast": self.vol_fast,
            "vol_slow": self.vol_slow,
            "value": self.value,
            "target_won": self.target_won,
            "returns_seen": self._n,
        }

    def save_state(self) -> dict[str, Any]:
        return msgspec.structs.asdict(VolatilityTrackerState(
            var_fast=self._var_fast, var_slow=self._var_slow, prev_close=self._prev, returns_seen=self._n,
            vol_fast=self.vol_fast, vol_slow=self.vol_slow, value=self.value, target_won=self.target_won,
        ))

    def load_state(self, state: dict[str, Any], version: int) -> None:
        s = read_state(state, version, self.state_version, VolatilityTrackerState)
        self._var_fast, self._var_slow, self._prev, self._n = s.var_fast, s.var_slow, s.prev_close, s.returns_seen
        self.vol_fast, self.vol_slow, self.value, self.target_won = s.vol_fast, s.vol_slow, s.value, s.target_won
