"""Sliced execution: a parent order worked as child orders over time, each within the agent's limits.

A strategy asks once (``AgentContext.work``); the context keeps a
``ParentOrder`` and, on each bar of its code, asks it how many shares should
be done by now (``target_qty``) and sends a child for the difference, sized
within the per-order limits, the cash or the shares at hand and the open-order
room. Two schedules:

- TWAP over ``minutes``: the first slice at once, then one more each minute
  (by the bars' time stamps), all done after ``minutes`` minutes;
- volume participation at ``rate``: the shares done follow ``rate`` times the
  volume the code traded since the parent began.

One child works at a time: a child still open when the next slice is due is
cancelled, and what it left is sent with the next slice. Children are limit
orders at the last price, never beyond the parent's limit price. The parent
ends when filled, on the strategy's cancel, at the close, or after
``MAX_CHILD_REFUSALS`` refusals of its children in a row. Driven by bars only
(never the wall clock), so a back-test and a live run work it alike; the
parents being worked are saved with the strategy's state, so a restarted
agent goes on working them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

NS_PER_MIN = 60_000_000_000
MAX_CHILD_REFUSALS = 3
MAX_PARTICIPATION = 0.5


class ParentStatus(StrEnum):
    """Where a parent order stands."""

    WORKING = "working"
    FILLED = "filled"
    CANCELED = "canceled"  # by the strategy, or after its children were refused
    EXPIRED = "expired"  # at the close, unfinished


@dataclass(slots=True)
class ParentOrder:
    """A parent order and how far it got; the context owns it, the strategy reads it."""

    parent_id: str
    code: str
    side: str
    qty: int
    start_ns: int
    limit_price: int = 0  # 0: no limit, children at the last price
    minutes: int = 0  # TWAP: the span in minutes (0: not TWAP)
    rate: float = 0.0  # volume participation: the share of traded volume (0: not participation)
    status: ParentStatus = ParentStatus.WORKING
    reason: str = ""
    filled_qty: int = 0
    traded_volume: int = 0  # the code's volume since the start (participation)
    child_id: str = ""  # the working child, if any
    children: list[str] = field(default_factory=list)
    child_refusals: int = 0  # refusals of its children in a row

    @property
    def is_working(self) -> bool:
        return self.status is ParentStatus.WORKING

    @property
    def remaining_qty(self) -> int:
        return self.qty - self.filled_qty

    def target_qty(self, now_ns: int) -> int:
        """The shares that should be done by ``now_ns`` under the schedule."""
        if self.minutes:
            slices = 1 + max(0, now_ns - self.start_ns) // NS_PER_MIN
            return self.qty * min(slices, self.minutes) // self.minutes
        return min(self.qty, int(self.rate * self.traded_volume))

    def on_bar_volume(self, ts_ns: int, volume: int) -> None:
        """A bar of the parent's code: count its volume if it came after the start."""
        if ts_ns > self.start_ns:
            self.traded_volume += volume

    def child_price(self, last_price: int) -> int:
        """The limit of the next child at ``last_price``, or 0 while the market is beyond the parent's limit."""
        if last_price <= 0:
            return 0
        if self.limit_price and (last_price > self.limit_price if self.side == "buy" else last_price < self.limit_price):
            return 0
        return last_price

    def end(self, status: ParentStatus, reason: str) -> None:
        """Stop working: filled, canceled or expired, with why."""
        if self.is_working:
            self.status, self.reason = status, reason

    def to_plain(self) -> dict[str, Any]:
        """Everything the parent is, as plain data for the saved state."""
        plain = dataclasses.asdict(self)
        plain["status"] = self.status.value
        return plain

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> ParentOrder:
        """A parent back from ``to_plain``; raises ValueError or TypeError if it does not fit."""
        return cls(**{**plain, "status": ParentStatus(plain["status"]), "children": list(plain["children"])})

    def as_dict(self) -> dict[str, object]:
        """The parent as plain data for status pages."""
        return {
            "parent_id": self.parent_id, "code": self.code, "side": self.side, "qty": self.qty,
            "filled_qty": self.filled_qty, "limit_price": self.limit_price,
            "schedule": f"twap {self.minutes} min" if self.minutes else f"participation {self.rate:.0%}",
            "status": self.status.value, "reason": self.reason, "child_id": self.child_id, "children": len(self.children),
        }


def schedule_problem(minutes: int | None, rate: float | None) -> str | None:
    """Why a schedule cannot be worked, or None: exactly one of TWAP minutes or participation rate."""
    if (minutes is None) == (rate is None):
        return "give exactly one of twap_minutes or participation"
    if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= 390):
        return f"twap_minutes must be a whole number of minutes from 1 to 390, not {minutes!r}"
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= MAX_PARTICIPATION):
        return f"participation must be a share of volume above 0 and at most {MAX_PARTICIPATION}, not {rate!r}"
    return None
