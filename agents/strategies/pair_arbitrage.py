"""Pair arbitrage between a common share and its preferred class (Samsung 005930 / 005935).

Hypothesis: the log discount d = ln(pref / common) mean-reverts (an
Ornstein-Uhlenbeck process with a half-life of weeks), so when it is unusually
wide the preferred is cheap relative to the common and the gap closes later;
when it does not revert (a random walk), there is nothing to earn.

The strategy samples d every ``sample_bars`` bars of the preferred and, on
each sample, estimates its mean reversion by least squares of the step on the
level (d_t - d_{t-1} = a + b d_{t-1}: phi = 1 + b, half-life ln 2 / -ln phi
samples). The z-score of d is taken against the mean and standard deviation
of the last ``window_half_lives`` half-lives of samples (the window is the
discount's own timescale, at least ``min_samples``). A discount whose
estimated half-life is not finite, longer than ``max_half_life_days``, or
so long that the samples do not span ``MIN_HALF_LIVES_SEEN`` of them (a
timescale the samples cannot show) is not trusted to revert: the strategy goes home, as
it holds its home leg until ``min_samples`` samples are in. Over a few
months a half-life of weeks cannot be told from a random walk with
confidence (a unit-root test rarely rejects), so the estimate is used as the
discount's timescale, not as proof: in a world where the discount walks, the
strategy still switches now and then and pays the costs.

With no short selling it switches its holding to the relatively cheap leg:
the preferred when z <= -``entry_z``, the common when z >= ``entry_z``, and
returns to its home leg once |z| <= ``exit_z``. A switch is taken only if
half the deviation (what reverts within one half-life) beats
``cost_multiple`` times the round trip: both legs' commission, the sell tax
and a tick of spread on each leg, there and back.

A switch is sized within the agent's limits: a leg larger than one order
is sold (and the other bought) as TWAP children over ``SWITCH_MINUTES``
(``ctx.trade``), and nothing new starts while a switch is being worked. The
leg is topped up only when at least ``MIN_TOP_UP`` of the equity lies idle,
so a switch cut short (at the close, or by a restart) is finished later
without a trickle of small orders.

State kept across restarts and days: the ring of sampled discounts, the bars
since the last sample, the last estimate (mean, deviation, half-life, z) and
the leg it holds (``target``), so a restarted agent keeps the leg it switched
to instead of going home. The samples run across the overnight, as in the
back-tester.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import msgspec
import numpy as np
from pydantic import Field, model_validator

from agents.context import AgentContext
from agents.strategy import BarData, StateError, Strategy, StrategyParams, read_state
from core import krx
from core.messages import SessionPhase

SWITCH_MINUTES = 5  # a leg bigger than one order is switched over this many minutes
MIN_TOP_UP = 0.1  # share of the equity idle before the held leg is bought up to its size again
BARS_PER_DAY = 381  # one-minute bars of a normal KRX day, the closing auction included
MIN_HALF_LIVES_SEEN = 2  # a half-life is trusted once the samples span at least this many of it


class PairArbitrageParams(StrategyParams):
    """Sampling, the half-life window, z thresholds, cost cover, home leg and the share of cash to invest."""

    sample_bars: int = Field(default=30, ge=1, le=10_000)
    max_samples: int = Field(default=1500, ge=20, le=20_000)
    min_samples: int = Field(default=60, ge=10, le=20_000)
    window_half_lives: float = Field(default=6.0, gt=0, le=100)
    max_half_life_days: float = Field(default=60.0, gt=0, le=10_000)
    entry_z: float = Field(default=2.0, gt=0, le=10)
    exit_z: float = Field(default=0.5, ge=0, le=10)
    cost_multiple: float = Field(default=1.0, ge=0, le=100)
    home_leg: Literal["common", "pref", "cash"] = "common"
    invest_fraction: float = Field(default=0.95, gt=0, le=1)

    @model_validator(mode="after")
    def _consistent(self) -> PairArbitrageParams:
        if self.exit_z >= self.entry_z:
            raise ValueError(f"exit_z ({self.exit_z}) must be below entry_z ({self.entry_z})")
        if self.min_samples > self.max_samples:
            raise ValueError(f"min_samples ({self.min_samples}) must not exceed max_samples ({self.max_samples})")
        return self


def half_life(d: np.ndarray) -> float:
    """The half-life in samples of a mean-reverting series by AR(1) least squares (inf if it does not revert)."""
    x, y = d[:-1], np.diff(d)
    xm = x.mean()
    sxx = float(((x - xm) ** 2).sum())
    if sxx <= 0:
        return math.inf
    b = float(((x - xm) * (y - y.mean())).sum()) / sxx
    if b >= 0 or b <= -1:
        return math.inf if b >= 0 else 0.5  # b <= -1: reverts within a sample
    return math.log(2) / -math.log1p(b)


class PairArbitrageState(msgspec.Struct, forbid_unknown_fields=True):
    """The saved ring of sampled log discounts, the last estimate and the leg held."""

    ring: list[float]
    since_sample: int
    discount: float
    mean: float
    std: float
    half_life: float
    z: float
    target: Literal["common", "pref", "cash"]


class PairArbitrage(Strategy):
    """Holds whichever leg of a common/preferred pair is relatively cheap while the discount reverts."""

    name = "pair_arbitrage"
    n_codes = 2
    Params = PairArbitrageParams
    params: PairArbitrageParams
    state_version = 2

    def __init__(self, params: PairArbitrageParams | None = None) -> None:
        super().__init__(params)
        self._ring: list[float] = []
        self._since_sample = 0
        self.discount = 0.0
        self.mean = 0.0
        self.std = 0.0
        self.half_life = math.inf  # in samples
        self.z = 0.0
        self.target: str = self.params.home_leg  # "common", "pref" or "cash"

    @classmethod
    def check_codes(cls, codes: list[str]) -> str | None:
        problem = super().check_codes(codes)
        if problem:
            return problem
        common, pref = codes
        if not krx.is_preferred(pref) or krx.common_of(pref) != common:
            return f"codes must be [common, its preferred], got {codes}"
        return None

    @property
    def half_life_days(self) -> float:
        """The estimated half-life in trading days."""
        return self.half_life * self.params.sample_bars / BARS_PER_DAY

    def on_bar(self, ctx: AgentContext, bar: BarData) -> None:
        common, pref = ctx.codes
        if bar.code != pref:
            return
        pc, pp = ctx.last_price(common), ctx.last_price(pref)
        if pc <= 0 or pp <= 0:
            return
        p = self.params
        self.discount = d = math.log(pp / pc)
        self._since_sample += 1
        if self._since_sample >= p.sample_bars or not self._ring:
            self._since_sample = 0
            self._ring.append(d)
            if len(self._ring) > p.max_samples:
                del self._ring[: len(self._ring) - p.max_samples]
            self._estimate()
        if len(self._ring) < p.min_samples or self.std <= 0:
            self._rebalance(ctx)  # nothing known of the discount yet: hold the home leg
            return
        self.z = (d - self.mean) / self.std
        self._decide(ctx, d - self.mean, pc, pp)

    def _estimate(self) -> None:
        p = self.params
        n = len(self._ring)
        if n < p.min_samples:
            return
        d = np.asarray(self._ring, dtype=np.float64)
        self.half_life = half_life(d)
        w = n if not math.isfinite(self.half_life) else int(min(n, max(p.min_samples, p.window_half_lives * self.half_life)))
        recent = d[-w:]
        self.mean, self.std = float(recent.mean()), float(recent.std())

    def _round_trip_cost(self, ctx: AgentContext, pc: int, pp: int) -> float:
        """Switching there and back: each leg bought once and sold once (commission both ways, tax), a tick each trade."""
        common, pref = ctx.codes
        cost = 0.0
        for code, px in ((common, pc), (pref, pp)):
            f, t = ctx.cost_rates(code)
            cost += 2 * f + t + 2 * krx.tick_size(px) / px
        return cost

    def _decide(self, ctx: AgentContext, deviation: float, pc: int, pp: int) -> None:
        p = self.params
        reverting = (self.half_life * MIN_HALF_LIVES_SEEN <= len(self._ring)  # a half-life the samples cover
                     and self.half_life_days <= p.max_half_life_days)
        if not reverting:
            self.target = p.home_leg
        else:
            edge_ok = 0.5 * abs(deviation) > p.cost_multiple * self._round_trip_cost(ctx, pc, pp)
            if self.z <= -p.entry_z and edge_ok:
                self.target = "pref"
            elif self.z >= p.entry_z and edge_ok:
                self.target = "common"
            elif abs(self.z) <= p.exit_z:
                self.target = p.home_leg
        self._rebalance(ctx)

    def _rebalance(self, ctx: AgentContext) -> None:
        if ctx.working() or ctx.has_open_orders() or ctx.phase not in (None, SessionPhase.OPEN):
            return
        legs = {"common": ctx.codes[0], "pref": ctx.codes[1]}
        for leg, code in legs.items():
            qty = ctx.sellable(code)
            if leg != self.target and qty > 0:
                ctx.trade(code, "sell", qty, ctx.last_price(code), twap_minutes=SWITCH_MINUTES)
                ctx.log(f"switch to {self.target}: sell {qty} {code}, z={self.z:.2f}, half-life {self.half_life_days:.1f} d")
                return  # buy the other leg once the proceeds are in
        code = legs.get(self.target)
        if code is None:
            return
        price = ctx.last_price(code)
        equity = ctx.equity()
        idle = ctx.cash() - int(equity * (1 - self.params.invest_fraction))
        qty = ctx.affordable_qty(code, price, idle)
        if qty > 0 and qty * price >= MIN_TOP_UP * equity:
            ctx.trade(code, "buy", qty, price, twap_minutes=SWITCH_MINUTES)
            ctx.log(f"hold {self.target}: buy {qty} {code}, z={self.z:.2f}")

    def state(self) -> dict[str, Any]:
        return {
            "samples": len(self._ring),
            "log_discount": self.discount,
            "mean_log_discount": self.mean,
            "std_log_discount": self.std,
            "half_life_days": self.half_life_days if math.isfinite(self.half_life) else None,
            "z": self.z,
            "target_leg": self.target,
        }

    def save_state(self) -> dict[str, Any]:
        return msgspec.structs.asdict(PairArbitrageState(
            ring=list(self._ring), since_sample=self._since_sample, discount=self.discount, mean=self.mean, std=self.std,
            half_life=self.half_life if math.isfinite(self.half_life) else -1.0, z=self.z,
            target=self.target,  # type: ignore[arg-type]
        ))

    def load_state(self, state: dict[str, Any], version: int) -> None:
        s = read_state(state, version, self.state_version, PairArbitrageState)
        if len(s.ring) > self.params.max_samples:
            raise StateError(f"ring of {len(s.ring)} discounts, max_samples is {self.params.max_samples}")
        self._ring, self._since_sample, self.discount = list(s.ring), s.since_sample, s.discount
        self.mean, self.std, self.z, self.target = s.mean, s.std, s.z, s.target
        self.half_life = s.half_life if s.half_life >= 0 else math.inf
