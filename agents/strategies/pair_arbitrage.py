"""Pair arbitrage between a common share and its preferred class (Samsung 005930 / 005935).

The log discount ln(pref / common) mean-reverts, so the strategy tracks its
z-score against a rolling mean and standard deviation. With no short selling it
switches its holding to the relatively cheap leg when the discount is unusually
wide (hold the preferred) or narrow (hold the common), provided the deviation
also beats the round-trip cost of switching there and back, and returns to its
home leg once the discount has reverted.

A switch is sized within the agent's limits: a leg larger than one order may
be is sold (and the other bought) as TWAP children over ``SWITCH_MINUTES``
(``ctx.trade``), and nothing new starts while a switch is being worked. The
leg is topped up only when at least ``MIN_TOP_UP`` of the equity lies idle,
so a switch cut short (at the close, or by a restart) is finished later
without a trickle of small orders.

State kept across restarts and days: the ring of the last ``window``
discounts with its running sums, the last discount and z-score, and the leg it
holds (``target``), so a restarted agent keeps the leg it switched to instead
of going home. The statistics run across the overnight, as in the back-tester.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import msgspec
from pydantic import Field, model_validator

from agents.context import AgentContext
from agents.strategy import BarData, Strategy, StrategyParams, StateError, read_state
from core import krx


SWITCH_MINUTES = 5  # a leg bigger than one order is switched over this many minutes
MIN_TOP_UP = 0.1  # share of the equity idle before the held leg is bought up to its size again


class PairArbitrageParams(StrategyParams):
    """Rolling window in samples, z thresholds, cost cover, home leg and the share of cash to invest."""

    window: int = Field(default=240, ge=10, le=100_000)
    entry_z: float = Field(default=2.0, gt=0, le=10)
    exit_z: float = Field(default=0.5, ge=0, le=10)
    cost_multiple: float = Field(default=1.0, ge=0, le=100)
    home_leg: Literal["common", "pref", "cash"] = "common"
    invest_fraction: float = Field(default=0.95, gt=0, le=1)

    @model_validator(mode="after")
    def _exit_inside_entry(self) -> PairArbitrageParams:
        if self.exit_z >= self.entry_z:
            raise ValueError(f"exit_z ({self.exit_z}) must be below entry_z ({self.entry_z})")
        return self


class PairArbitrageState(msgspec.Struct, forbid_unknown_fields=True):
    """The saved ring of log discounts, its sums and the leg held."""

    ring: list[float]
    samples: int
    discount_sum: float
    discount_sumsq: float
    discount: float
    z: float
    target: Literal["common", "pref", "cash"]


class PairArbitrage(Strategy):
    """Holds whichever leg of a common/preferred pair is relatively cheap."""

    name = "pair_arbitrage"
    n_codes = 2
    Params = PairArbitrageParams
    params: PairArbitrageParams

    def __init__(self, params: PairArbitrageParams | None = None) -> None:
        super().__init__(params)
        self._ring = [0.0] * self.params.window
        self._n = 0
        self._sum = 0.0
        self._sumsq = 0.0
        self.discount = 0.0
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

    def on_bar(self, ctx: AgentContext, bar: BarData) -> None:
        common, pref = ctx.codes
        if bar.code != pref:
            return
        pc, pp = ctx.last_price(common), ctx.last_price(pref)
        if pc <= 0 or pp <= 0:
            return
        d = math.log(pp / pc)
        self.discount = d
        w = self.params.window
        if self._n >= w:
            mean = self._sum / w
            std = math.sqrt(max(self._sumsq / w - mean * mean, 0.0))
            self._decide(ctx, d - mean, std)
        slot = self._n % w
        old = self._ring[slot]
        if self._n >= w:
            self._sum -= old
            self._sumsq -= old * old
        self._ring[slot] = d
        self._sum += d
        self._sumsq += d * d
        self._n += 1

    def _decide(self, ctx: AgentContext, deviation: float, std: float) -> None:
        p = self.params
        if std <= 0:
            return
        self.z = z = deviation / std
        f, t = ctx.cost_rates(ctx.codes[1])
        # switching = sell one leg and buy the other; it pays twice (there and back)
        edge_ok = abs(deviation) > p.cost_multiple * 2 * (2 * f + t)
        if z <= -p.entry_z and edge_ok:
            self.target = "pref"
        elif z >= p.entry_z and edge_ok:
            self.target = "common"
        elif abs(z) <= p.exit_z:
            self.target = p.home_leg
        self._rebalance(ctx)

    def _rebalance(self, ctx: AgentContext) -> None:
        if ctx.working() or ctx.has_open_orders():
            return
        legs = {"common": ctx.codes[0], "pref": ctx.codes[1]}
        for leg, code in legs.items():
            qty = ctx.sellable(code)
            if leg != self.target and qty > 0:
                ctx.trade(code, "sell", qty, ctx.last_price(code), twap_minutes=SWITCH_MINUTES)
                ctx.log(f"switch to {self.target}: sell {qty} {code}, z={self.z:.2f}")
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
        w = self.params.window
        return {
            "samples": self._n,
            "log_discount": self.discount,
            "mean_log_discount": self._sum / min(self._n, w) if self._n else 0.0,
            "z": self.z,
            "target_leg": self.target,
        }

    def save_state(self) -> dict[str, Any]:
        return msgspec.structs.asdict(PairArbitrageState(
            ring=list(self._ring), samples=self._n, discount_sum=self._sum, discount_sumsq=self._sumsq,
            discount=self.discount, z=self.z, target=self.target,  # type: ignore[arg-type]
        ))

    def load_state(self, state: dict[str, Any], version: int) -> None:
        s = read_state(state, version, self.state_version, PairArbitrageState)
        if len(s.ring) != self.params.window:
            raise StateError(f"ring of {len(s.ring)} discounts, window is {self.params.window}")
        self._ring, self._n, self._sum, self._sumsq = s.ring, s.samples, s.discount_sum, s.discount_sumsq
        self.discount, self.z, self.target = s.discount, s.z, s.target
