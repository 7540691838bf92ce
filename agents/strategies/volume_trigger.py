"""Volume trigger: enter on a volume surge confirmed by a price move, exit at a take-profit or a stop.

A bar whose volume is several times the recent average, with the close up by
at least a set fraction on the previous close, signals informed buying; the
strategy buys at that close. It sells when the return after buy and sell costs
reaches the take-profit, or falls to the stop loss. An order larger than the
agent's per-order limits is worked as TWAP children (``ctx.trade``).

State kept across restarts and days: the ring of the last ``lookback``
volumes with its sum, the previous close and the counters. The average runs
across the overnight as in the back-tester (the opening bar is compared with
yesterday's last bars). The exits need no state of their own: they read the
holding's cost from the book.
"""

from __future__ import annotations

from typing import Any

import msgspec
from pydantic import Field

from agents.context import AgentContext
from agents.strategy import BarData, Strategy, StrategyParams, StateError, read_state


class VolumeTriggerParams(StrategyParams):
    """Average window, surge ratio, confirming move, exits after costs and position size."""

    lookback: int = Field(default=20, ge=2, le=5000)
    surge_ratio: float = Field(default=3.0, gt=1, le=100)
    min_move: float = Field(default=0.005, ge=0, le=0.3)
    take_profit: float = Field(default=0.01, gt=0, le=1)
    stop_loss: float = Field(default=0.01, gt=0, le=1)
    invest_fraction: float = Field(default=0.5, gt=0, le=1)


class VolumeTriggerState(msgspec.Struct, forbid_unknown_fields=True):
    """The saved ring of volumes, previous close and counters."""

    ring: list[int]
    bars_seen: int
    volume_sum: int
    prev_close: int
    surges: int
    exits: dict[str, int]


class VolumeTrigger(Strategy):
    """Buys a confirmed volume surge; takes profit after costs or stops out."""

    name = "volume_trigger"
    Params = VolumeTriggerParams
    params: VolumeTriggerParams

    def __init__(self, params: VolumeTriggerParams | None = None) -> None:
        super().__init__(params)
        self._ring = [0] * self.params.lookback
        self._n = 0
        self._sum = 0
        self._prev_close = 0
        self.surges = 0
        self.exits = {"take_profit": 0, "stop_loss": 0}

    def on_bar(self, ctx: AgentContext, bar: BarData) -> None:
        p = self.params
        code = bar.code
        if ctx.working(code):
            pass  # an entry or exit bigger than one order is being worked
        elif ctx.sellable(code) > 0:
            r = ctx.return_after_costs(code)
            if r >= p.take_profit or r <= -p.stop_loss:
                self.exits["take_profit" if r > 0 else "stop_loss"] += 1
                ctx.trade(code, "sell", ctx.sellable(code), bar.close)
        elif self._n >= p.lookback and self._prev_close > 0 and ctx.position(code) == 0 and not ctx.open_orders(code):
            surge = bar.volume * p.lookback >= p.surge_ratio * self._sum
            moved = bar.close >= self._prev_close * (1 + p.min_move)
            if surge and moved:
                self.surges += 1
                qty = ctx.affordable_qty(code, bar.close, int(ctx.equity() * p.invest_fraction))
                if qty > 0:
                    ctx.trade(code, "buy", qty, bar.close)
                    ctx.log(f"volume surge {bar.volume} vs avg {self._sum / p.lookback:.0f}: buy {qty}")
        slot = self._n % p.lookback
        self._sum += bar.volume - self._ring[slot]
        self._ring[slot] = bar.volume
        self._n += 1
        self._prev_close = bar.close

    def state(self) -> dict[str, Any]:
        n = min(self._n, self.params.lookback)
        return {"avg_volume": self._sum / n if n else 0.0, "surges": self.surges, "exits": dict(self.exits)}

    def save_state(self) -> dict[str, Any]:
        return msgspec.structs.asdict(VolumeTriggerState(ring=list(self._ring), bars_seen=self._n, volume_sum=self._sum,
                                                         prev_close=self._prev_close, surges=self.surges, exits=dict(self.exits)))

    def load_state(self, state: dict[str, Any], version: int) -> None:
        s = read_state(state, version, self.state_version, VolumeTriggerState)
        if len(s.ring) != self.params.lookback:
            raise StateError(f"ring of {len(s.ring)} volumes, lookback is {self.params.lookback}")
        if set(s.exits) != set(self.exits):
            raise StateError(f"exit counters {sorted(s.exits)}, expected {sorted(self.exits)}")
        self._ring, self._n, self._sum, self._prev_close = s.ring, s.bars_seen, s.volume_sum, s.prev_close
        self.surges, self.exits = s.surges, s.exits
