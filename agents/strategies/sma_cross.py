"""SMA crossover: long when the fast simple moving average of closes crosses above the slow one.

Long-only with a fixed quantity: when the fast average crosses above the slow
one the strategy buys ``qty`` shares, when it crosses back below it sells the
whole holding. The order is a limit at the signal bar's close (rounded onto the
grid for its side), or a market order with ``order_type = "market"``. Both
averages are running sums over a ring of closes, so ``on_bar`` is O(1): this is
the back-tester's reference strategy and benchmark load.

State kept across restarts and days: the ring of the last ``slow`` closes with
its two running sums, the bars seen and which average was above at the last
bar, so a restarted agent neither waits ``slow`` bars again nor takes a cross
it had already acted on for a new one. The averages run across the overnight,
as in the back-tester: nothing resets per day.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from pydantic import Field, model_validator

from agents.context import AgentContext
from agents.strategy import BarData, Strategy, StrategyParams, StateError, read_state


class SmaCrossParams(StrategyParams):
    """Window lengths in bars, order size in shares, and the order type."""

    fast: int = Field(default=10, ge=1, le=1000)
    slow: int = Field(default=30, ge=2, le=5000)
    qty: int = Field(default=100, ge=1, le=1_000_000)
    order_type: Literal["limit", "market"] = "limit"

    @model_validator(mode="after")
    def _fast_below_slow(self) -> SmaCrossParams:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be shorter than slow ({self.slow})")
        return self


class SmaCrossState(msgspec.Struct, forbid_unknown_fields=True):
    """The saved ring of closes and cross state."""

    ring: list[int]
    bars_seen: int
    sum_fast: int
    sum_slow: int
    above: bool | None
    signals: int


class SmaCross(Strategy):
    """Fast/slow SMA crossover, long-only, fixed quantity."""

    name = "sma_cross"
    Params = SmaCrossParams
    params: SmaCrossParams

    def __init__(self, params: SmaCrossParams | None = None) -> None:
        super().__init__(params)
        p = self.params
        self._fast, self._slow = p.fast, p.slow
        self._ring = [0] * p.slow
        self._i = 0  # closes seen
        self._sum_fast = 0
        self._sum_slow = 0
        self._above: bool | None = None
        self._market = p.order_type == "market"
        self.signals = 0

    def on_bar(self, ctx: AgentContext, bar: BarData) -> None:
        close = bar.close
        # one assignment each rather than a tuple packed and unpacked: on_bar runs on every bar
        ring = self._ring
        slow = self._slow
        fast = self._fast
        i = self._i
        slot = i % slow
        sum_slow = self._sum_slow = self._sum_slow + close - ring[slot]
        if i >= fast:
            sum_fast = self._sum_fast = self._sum_fast + close - ring[(i - fast) % slow]
        else:
            sum_fast = self._sum_fast = self._sum_fast + close
        ring[slot] = close
        self._i = i + 1
        if i + 1 < slow:
            return
        # fast mean > slow mean, compared exactly in integers
        above = sum_fast * slow > sum_slow * fast
        was = self._above
        if above is was:  # no cross (bools are singletons)
            return
        self._above = above
        if was is None:
            return
        self.signals += 1
        code = bar.code
        price = None if self._market else close
        if above:
            if ctx.position(code) == 0 and not ctx.has_open_orders(code):
                ctx.buy(code, self.params.qty, price)
        else:
            qty = ctx.sellable(code)
            if qty > 0:
                ctx.sell(code, qty, price)

    def state(self) -> dict[str, Any]:
        n = min(self._i, self._slow)
        return {
            "bars_seen": self._i,
            "sma_fast": self._sum_fast / min(self._i, self._fast) if self._i else 0.0,
            "sma_slow": self._sum_slow / n if n else 0.0,
            "fast_above_slow": self._above,
            "signals": self.signals,
        }

    def save_state(self) -> dict[str, Any]:
        return msgspec.structs.asdict(SmaCrossState(ring=list(self._ring), bars_seen=self._i, sum_fast=self._sum_fast,
                                                    sum_slow=self._sum_slow, above=self._above, signals=self.signals))

    def load_state(self, state: dict[str, Any], version: int) -> None:
        s = read_state(state, version, self.state_version, SmaCrossState)
        if len(s.ring) != self._slow:
            raise StateError(f"ring of {len(s.ring)} closes, slow is {self._slow}")
        self._ring, self._i, self._sum_fast, self._sum_slow = s.ring, s.bars_seen, s.sum_fast, s.sum_slow
        self._above, self.signals = s.above, s.signals
