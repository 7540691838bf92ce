"""Foreign follower: hold a stock the day after strong foreign net buying; leave when it turns, on a stop or in time.

Hypothesis: foreign net buying is persistent and moves the price its way with
a lag: what foreigners bought on a day, published after its close, is
followed by a rise over the next day (and, as the buying persists, the days
after). A flow that says nothing about later prices leaves nothing to earn.

The venue reports the day's running totals since the open (provisional at
about 09:30, 11:20, 13:20 and 14:30, the final after the close), so what a
report adds is its change from the previous report of the same day (the
first report of a day: from 0). Each change is scaled by the volume traded
since the previous report (the share of the trading that was foreign net
buying, shown as ``last_share``); a running total over the day's volume so
far is the day's share. The strategy decides twice a day, each time on what
is known then: at the last provisional report of the session (from 14:00
KST), at once, and on the final figure, published after the close, at the
first bar of the next day (never on the day it describes). It buys when the
day's share is at least ``entry_share``; it keeps a holding while the share
is at least ``hold_share`` and sells otherwise; it also sells when the price
falls ``trail_pct`` below its peak since entry, or after ``max_hold_days``
trading days. An order larger than the agent's per-order limits is worked as
TWAP children (``ctx.trade``).

State kept across restarts and days: the day of the last report and its
running total, the day's volume up to the last report, the last shares, the
day of a final figure still to act on, the trailing peak, the days held and
the exit counters.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from pydantic import Field

from agents.context import AgentContext
from agents.strategy import BarData, FillData, FlowData, StateError, Strategy, StrategyParams, read_state
from core.messages import SessionPhase
from core.portfolio import KST, kst_date

DECIDE_FROM = dt.time(14, 0)  # a provisional report from this time (KST) is the session's last: decide on it


def kst_time(ts_ns: int) -> dt.time:
    """The KST clock time of a time stamp."""
    return dt.datetime.fromtimestamp(ts_ns / 1e9, KST).time()


class ForeignFollowerParams(StrategyParams):
    """Entry and exit shares of the day's volume, trailing stop, holding period and position size."""

    entry_share: float = Field(default=0.05, gt=0, le=1)
    hold_share: float = Field(default=0.02, ge=-1, le=1)
    trail_pct: float = Field(default=0.05, gt=0, lt=0.5)
    max_hold_days: int = Field(default=5, ge=1, le=250)
    invest_fraction: float = Field(default=0.5, gt=0, le=1)


class ForeignFollowerState(msgspec.Struct, forbid_unknown_fields=True):
    """The saved report day, running totals, shares, the figure to act on, trailing peak and counters."""

    day: str
    day_total: int
    bar_day: str
    day_volume: int
    volume_at_report: int
    last_share: float
    day_share: float
    pending_day: str
    peak: int
    entry_day: str
    days_held: int
    exits: dict[str, int]


def _day_of(ts_ns: int) -> str:
    return kst_date(ts_ns).strftime("%Y%m%d")


class ForeignFollower(Strategy):
    """Buys the day after unusually strong foreign net buying; exits on reversal, a trailing stop or time."""

    name = "foreign_follower"
    Params = ForeignFollowerParams
    params: ForeignFollowerParams
    state_version = 2

    def __init__(self, params: ForeignFollowerParams | None = None) -> None:
        super().__init__(params)
        self.day = ""  # trading day of the last report
        self.day_total = 0  # its running total of foreign net buying
        self.bar_day = ""  # trading day of the last bar
        self.day_volume = 0  # shares traded that day so far
        self.volume_at_report = 0  # of which before the last report
        self.last_share = 0.0  # the last report's new foreign net buying over the volume traded since the one before
        self.day_share = 0.0  # the last final figure over its day's volume
        self.pending_day = ""  # the day of a final figure not yet acted on
        self.peak = 0
        self.entry_day = ""
        self.days_held = 0
        self.exits = {"reversal": 0, "trailing_stop": 0, "time": 0}

    def on_flow(self, ctx: AgentContext, flow: FlowData) -> None:
        day = getattr(flow, "trading_date", "") or _day_of(flow.ts_ns)
        if day != self.day:
            self.day, self.day_total, self.volume_at_report = day, 0, 0
        volume = self.day_volume if self.bar_day == day else 0
        cumulative = getattr(flow, "cumulative", True)  # a report of its own interval only adds to the day's total
        total = flow.foreign_net_qty if cumulative else self.day_total + flow.foreign_net_qty
        new_qty = total - self.day_total
        new_volume = volume - self.volume_at_report
        self.day_total, self.volume_at_report = total, volume
        if new_volume > 0:
            self.last_share = new_qty / new_volume
        if volume <= 0:
            return
        self.day_share = self.day_total / volume
        if not flow.provisional:
            self.pending_day = day  # published after the close: acted on at the first bar of a later day
        elif kst_time(flow.ts_ns) >= DECIDE_FROM and ctx.phase in (None, SessionPhase.OPEN):
            self._decide(ctx, flow.code)

    def _decide(self, ctx: AgentContext, code: str) -> None:
        self.pending_day = ""
        p = self.params
        if ctx.has_open_orders(code) or ctx.working(code):
            return
        held = ctx.sellable(code)
        if held > 0:
            if self.day_share < p.hold_share:
                self.exits["reversal"] += 1
                ctx.trade(code, "sell", held, ctx.last_price(code))
                ctx.log(f"foreign net selling {self.day_share:.1%} of the volume: sell {held}")
        elif ctx.position(code) == 0 and self.day_share >= p.entry_share:
            price = ctx.last_price(code)
            qty = ctx.affordable_qty(code, price, int(ctx.equity() * p.invest_fraction))
            if qty > 0:
                ctx.trade(code, "buy", qty, price)
                ctx.log(f"foreign net buying {self.day_share:.1%} of the volume: buy {qty}")

    def on_bar(self, ctx: AgentContext, bar: BarData) -> None:
        day = _day_of(bar.ts_ns)
        if day != self.bar_day:
            self.bar_day, self.day_volume = day, 0
            if self.entry_day and ctx.position(bar.code) > 0:
                self.days_held += 1
        self.day_volume += bar.volume
        if ctx.phase not in (None, SessionPhase.OPEN):
            return
        if self.pending_day and day > self.pending_day:
            self._decide(ctx, bar.code)
        held = ctx.sellable(bar.code)
        if held <= 0 or ctx.working(bar.code) or ctx.has_open_orders(bar.code):
            return
        self.peak = max(self.peak, bar.high)
        if bar.close <= self.peak * (1 - self.params.trail_pct):
            self.exits["trailing_stop"] += 1
            ctx.trade(bar.code, "sell", held, bar.close)
            ctx.log(f"trailing stop at {bar.close} (peak {self.peak}): sell {held}")
        elif self.days_held >= self.params.max_hold_days:
            self.exits["time"] += 1
            ctx.trade(bar.code, "sell", held, bar.close)
            ctx.log(f"held {self.days_held} days: sell {held}")

    def on_fill(self, ctx: AgentContext, fill: FillData) -> None:
        if fill.side == "buy":
            self.peak = max(self.peak, fill.price)
            if not self.entry_day:
                self.entry_day, self.days_held = _day_of(fill.ts_ns), 0
        elif ctx.position(fill.code) == 0:
            self.peak, self.entry_day, self.days_held = 0, "", 0

    def state(self) -> dict[str, Any]:
        return {"day_total": self.day_total, "last_share": self.last_share, "day_share": self.day_share,
                "pending_day": self.pending_day, "peak": self.peak, "days_held": self.days_held, "exits": dict(self.exits)}

    def save_state(self) -> dict[str, Any]:
        return msgspec.structs.asdict(ForeignFollowerState(
            day=self.day, day_total=self.day_total, bar_day=self.bar_day, day_volume=self.day_volume,
            volume_at_report=self.volume_at_report, last_share=self.last_share, day_share=self.day_share,
            pending_day=self.pending_day,
            peak=self.peak, entry_day=self.entry_day, days_held=self.days_held, exits=dict(self.exits),
        ))

    def load_state(self, state: dict[str, Any], version: int) -> None:
        s = read_state(state, version, self.state_version, ForeignFollowerState)
        if set(s.exits) != set(self.exits):
            raise StateError(f"exit counters {sorted(s.exits)}, expected {sorted(self.exits)}")
        self.day, self.day_total, self.bar_day, self.day_volume = s.day, s.day_total, s.bar_day, s.day_volume
        self.volume_at_report, self.last_share, self.day_share = s.volume_at_report, s.last_share, s.day_share
        self.pending_day = s.pending_day
        self.peak, self.entry_day, self.days_held, self.exits = s.peak, s.entry_day, s.days_held, s.exits
