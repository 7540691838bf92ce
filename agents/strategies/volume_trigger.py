"""Volume trigger: buy a volume surge that lifts the price above the day's VWAP; exit at a target, a stop or in time.

Hypothesis: a burst of volume that carries the price up and away from what
the day's buyers paid on average (the session's volume-weighted average
price) is informed buying, and the move goes on for a while; volume alone
says nothing about the direction, so a surge without such a move is left
alone.

On each bar the strategy compares the bar's volume with the average of the
last ``lookback`` bars and the close with the session VWAP (typical price
(high + low + close) / 3, weighted by volume, reset each day). It buys at the
close when the volume is at least ``surge_ratio`` times the average, the bar
closed up on the previous close (its volume was bought, not sold) and the close
is at least ``min_move`` above the VWAP. It sells when the return after buy
and sell costs reaches ``take_profit``, falls to ``-stop_loss``, or after
``max_hold_bars`` bars. ``take_profit`` below the round trip's costs is
refused: a target that costs eat earns nothing. An order larger than the
agent's per-order limits is worked as TWAP children (``ctx.trade``).

State kept across restarts and days: the ring of the last ``lookback``
volumes with its sum, the previous close, the session's VWAP sums and day,
the bars held and the counters. The volume average runs across the overnight
(the opening bar is compared with yesterday's last bars); the VWAP is the
day's.
"""

from __future__ import annotations

from typing import Any

import msgspec
from pydantic import Field

from agents.context import AgentContext
from agents.strategy import BarData, StateError, Strategy, StrategyParams, read_state
from core.messages import SessionPhase
from core.portfolio import kst_date

ROUND_TRIP_COST = 0.0025  # commission both ways and the sell tax, rounded up: the least take-profit worth taking


class VolumeTriggerParams(StrategyParams):
    """Average window, surge ratio, the move above VWAP, exits after costs, holding time and position size."""

    lookback: int = Field(default=20, ge=2, le=5000)
    surge_ratio: float = Field(default=3.0, gt=1, le=100)
    min_move: float = Field(default=0.005, ge=0, le=0.3)
    take_profit: float = Field(default=0.01, gt=ROUND_TRIP_COST, le=1)
    stop_loss: float = Field(default=0.01, gt=0, le=1)
    max_hold_bars: int = Field(default=120, ge=1, le=100_000)
    invest_fraction: float = Field(default=0.5, gt=0, le=1)


class VolumeTriggerState(msgspec.Struct, forbid_unknown_fields=True):
    """The saved ring of volumes, previous close, the session's VWAP sums, bars held and counters."""

    ring: list[int]
    bars_seen: int
    volume_sum: int
    prev_close: int
    day: str
    vwap_value: float
    vwap_volume: int
    held_bars: int
    surges: int
    exits: dict[str, int]


class VolumeTrigger(Strategy):
    """Buys a volume surge that lifts the price above the session VWAP; takes profit after costs, stops out or times out."""

    name = "volume_trigger"
    Params = VolumeTriggerParams
    params: VolumeTriggerParams
    state_version = 2

    def __init__(self, params: VolumeTriggerParams | None = None) -> None:
        super().__init__(params)
        self._ring = [0] * self.params.lookback
        self._n = 0
        self._sum = 0
        self._prev_close = 0
        self._day = ""
        self._vwap_value = 0.0
        self._vwap_volume = 0
        self.held_bars = 0
        self.surges = 0
        self.exits = {"take_profit": 0, "stop_loss": 0, "time": 0}

    @property
    def vwap(self) -> float:
        """The session's volume-weighted average price so far (0 before any volume)."""
        return self._vwap_value / self._vwap_volume if self._vwap_volume else 0.0

    def on_bar(self, ctx: AgentContext, bar: BarData) -> None:
        p = self.params
        code = bar.code
        day = kst_date(bar.ts_ns).strftime("%Y%m%d")
        if day != self._day:
            self._day, self._vwap_value, self._vwap_volume = day, 0.0, 0
        self._vwap_value += (bar.high + bar.low + bar.close) / 3 * bar.volume
        self._vwap_volume += bar.volume
        if ctx.working(code) or ctx.phase not in (None, SessionPhase.OPEN):
            pass  # an entry or exit bigger than one order is being worked, or no continuous trading
        elif ctx.sellable(code) > 0:
            self.held_bars += 1
            r = ctx.return_after_costs(code)
            exit_by = "take_profit" if r >= p.take_profit else "stop_loss" if r <= -p.stop_loss else \
                "time" if self.held_bars >= p.max_hold_bars else ""
            if exit_by:
                self.exits[exit_by] += 1
                ctx.trade(code, "sell", ctx.sellable(code), bar.close)
        elif self._n >= p.lookback and self._prev_close > 0 and ctx.position(code) == 0 and not ctx.open_orders(code):
            surge = bar.volume * p.lookback >= p.surge_ratio * self._sum
            bought = bar.close > self._prev_close
            above = bar.close >= self.vwap * (1 + p.min_move)
            if surge and bought and above:
                self.surges += 1
                qty = ctx.affordable_qty(code, bar.close, int(ctx.equity() * p.invest_fraction))
                if qty > 0:
                    self.held_bars = 0
                    ctx.trade(code, "buy", qty, bar.close)
                    ctx.log(f"volume surge {bar.volume} vs avg {self._sum / p.lookback:.0f}, "
                            f"close {bar.close} vs VWAP {self.vwap:.0f}: buy {qty}")
        slot = self._n % p.lookback
        self._sum += bar.volume - self._ring[slot]
        self._ring[slot] = bar.volume
        self._n += 1
        self._prev_close = bar.close

    def state(self) -> dict[str, Any]:
        n = min(self._n, self.params.lookback)
        return {"avg_volume": self._sum / n if n else 0.0, "vwap": self.vwap, "held_bars": self.held_bars,
                "surges": self.surges, "exits": dict(self.exits)}

    def save_state(self) -> dict[str, Any]:
        return msgspec.structs.asdict(VolumeTriggerState(
            ring=list(self._ring), bars_seen=self._n, volume_sum=self._sum, prev_close=self._prev_close, day=self._day,
            vwap_value=self._vwap_value, vwap_volume=self._vwap_volume, held_bars=self.held_bars, surges=self.surges,
            exits=dict(self.exits),
        ))

    def load_state(self, state: dict[str, Any], version: int) -> None:
        s = read_state(state, version, self.state_version, VolumeTriggerState)
        if len(s.ring) != self.params.lookback:
            raise StateError(f"ring of {len(s.ring)} volumes, lookback is {self.params.lookback}")
        if set(s.exits) != set(self.exits):
            raise StateError(f"exit counters {sorted(s.exits)}, expected {sorted(self.exits)}")
        self._ring, self._n, self._sum, self._prev_close = s.ring, s.bars_seen, s.volume_sum, s.prev_close
        self._day, self._vwap_value, self._vwap_volume = s.day, s.vwap_value, s.vwap_volume
        self.held_bars, self.surges, self.exits = s.held_bars, s.surges, s.exits
