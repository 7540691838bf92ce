"""The paper world's market clock: market time runs at ``speed`` x wall time and can jump overnight."""

from __future__ import annotations

import datetime as dt

from core.krx import KST, is_trading_day, next_trading_day


class MarketClock:
    """Maps a monotonic wall reading (ns) to market time (ns since the epoch, UTC).

    Pure: the caller passes the wall reading in. ``jump`` re-anchors the clock,
    which is how the exchange skips the night between two trading days.
    """

    def __init__(self, market_ns: int, wall_ns: int, speed: float) -> None:
        if speed <= 0:
            raise ValueError(f"clock speed must be positive, not {speed}")
        self.speed = speed
        self._anchor_market_ns = market_ns
        self._anchor_wall_ns = wall_ns

    def now(self, wall_ns: int) -> int:
        """Market time at a wall reading (never before the anchor)."""
        return self._anchor_market_ns + int(max(0, wall_ns - self._anchor_wall_ns) * self.speed)

    def jump(self, market_ns: int, wall_ns: int) -> None:
        """Set market time to ``market_ns`` as of the wall reading ``wall_ns``."""
        self._anchor_market_ns = market_ns
        self._anchor_wall_ns = wall_ns


def first_market_day(start_date: str, today: dt.date) -> dt.date:
    """The paper world's first trading day: ``start_date`` (YYYY-MM-DD) if set, else today or the next XKRX day."""
    day = dt.date.fromisoformat(start_date) if start_date else today
    return day if is_trading_day(day) else next_trading_day(day)


def kst_ns(day: dt.date, hhmm: str) -> int:
    """A KST time of day ("HH:MM" or "HH:MM:SS") on a date, as ns since the epoch (UTC)."""
    t = dt.time.fromisoformat(hhmm)
    return int(dt.datetime.combine(day, t, KST).timestamp()) * 1_000_000_000
