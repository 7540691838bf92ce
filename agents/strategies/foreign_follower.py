"""Foreign follower: ride persistent foreign net buying, leave when it turns or on a trailing stop.

Foreign net buying is persistent and tends to follow, and move, prices. The
strategy sums foreign net buying over the last few flow reports and scales it
by the volume traded over the recent bars; when that share is large and most
reports were net purchases it buys. It sells when the cumulated flow turns to
net selling or when the price falls a set fraction below its peak since entry.
An order larger than the agent's per-order limits is worked as TWAP children
(``ctx.trade``).

State kept across restarts and days: the trailing peak since entry (it
survives the overnight while the holding does; the sale of the last share
resets it), the last score and the exit counters. The flow reports and the
volume window are the context's (``ctx.flows``, ``ctx.bars``): the flows are
saved with the strategy's state by the context, the bars warmed from the
recorded bars.
"""

from __future__ import annotations

from typing import Any

import msgspec
from pydantic import Field

from agents.context import AgentContext
from agents.strategy import BarData, FillData, FlowData, Strategy, StrategyParams, StateError, read_state


class ForeignFollowerParams(StrategyParams):
    """Flow window, volume window, entry/exit scores, persistence, trailing stop and position size."""

    window: int = Field(default=4, ge=1, le=250)
    volume_bars: int = Field(default=120, ge=1, le=10_000)
    entry_score: float = Field(default=0.05, gt=0, le=10)
    exit_score: float = Field(default=0.0, ge=-10, le=10)
    min_positive_fraction: float = Field(default=0.75, ge=0, le=1)
    trail_pct: float = Field(default=0.05, gt=0, lt=0.5)
    invest_fraction: float = Field(default=0.5, gt=0, le=1)


class ForeignFollowerState(msgspec.Struct, forbid_unknown_fields=True):
    """The saved trailing peak, last score and exit counters."""

    score: float
    positive_fraction: float
    peak: int
    exits: dict[str, int]


class ForeignFollower(Strategy):
    """Buys on strong, persistent foreign net buying; exits on reversal or a trailing stop."""

    name = "foreign_follower"
    Params = ForeignFollowerParams
    params: ForeignFollowerParams

    def __init__(self, params: ForeignFollowerParams | None = None) -> None:
        super().__init__(params)
        self.score = 0.0
        self.positive_fraction = 0.0
        self.peak = 0
        self.exits = {"reversal": 0, "trailing_stop": 0}

    def on_flow(self, ctx: AgentContext, flow: FlowData) -> None:
        p = self.params
        code = flow.code
        flows = ctx.flows(code, p.window)
        volume = int(ctx.bars(code, p.volume_bars).volume.sum())
        if len(flows) < p.window or volume <= 0:
            return
        self.score = sum(f.foreign_net_qty for f in flows) / volume
        self.positive_fraction = sum(1 for f in flows if f.foreign_net_qty > 0) / len(flows)
        if ctx.has_open_orders(code) or ctx.working(code):
            return
        held = ctx.sellable(code)
        if held > 0:
            if self.score <= p.exit_score:
                self.exits["reversal"] += 1
                ctx.trade(code, "sell", held, ctx.last_price(code))
        elif self.score >= p.entry_score and self.positive_fraction >= p.min_positive_fraction:
            price = ctx.last_price(code)
            qty = ctx.affordable_qty(code, price, int(ctx.equity() * p.invest_fraction))
            if qty > 0:
                ctx.trade(code, "buy", qty, price)
                ctx.log(f"foreign buying score {self.score:.3f}: buy {qty}")

    def on_bar(self, ctx: AgentContext, bar: BarData) -> None:
        held = ctx.sellable(bar.code)
        if held <= 0 or ctx.working(bar.code):
            return
        self.peak = max(self.peak, bar.high)
        if bar.close <= self.peak * (1 - self.params.trail_pct):
            self.exits["trailing_stop"] += 1
            ctx.trade(bar.code, "sell", held, bar.close)
            ctx.log(f"trailing stop at {bar.close} (peak {self.peak}): sell {held}")

    def on_fill(self, ctx: AgentContext, fill: FillData) -> None:
        if fill.side == "buy":
            self.peak = max(self.peak, fill.price)
        elif ctx.position(fill.code) == 0:
            self.peak = 0

    def state(self) -> dict[str, Any]:
        return {"score": self.score, "positive_fraction": self.positive_fraction, "peak": self.peak, "exits": dict(self.exits)}

    def save_state(self) -> dict[str, Any]:
        return msgspec.structs.asdict(ForeignFollowerState(score=self.score, positive_fraction=self.positive_fraction,
                                                           peak=self.peak, exits=dict(self.exits)))

    def load_state(self, state: dict[str, Any], version: int) -> None:
        s = read_state(state, version, self.state_version, ForeignFollowerState)
        if set(s.exits) != set(self.exits):
            raise StateError(f"exit counters {sorted(s.exits)}, expected {sorted(self.exits)}")
        self.score, self.positive_fraction, self.peak, self.exits = s.score, s.positive_fraction, s.peak, s.exits
