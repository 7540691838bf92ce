"""One-minute OHLCV bars built from KIS trade ticks, per code, for the venue's ``md.bar.1m.<code>`` feed.

Pure: every call takes the time as nanoseconds since the epoch (a KST wall
time converted, ``notices.kst_ns``; minutes start at the same instants in KST
and UTC). A bar covers ``[minute, minute + 60 s)``; it is emitted, final,
when its minute is over: on the first tick of a later minute, or on
``flush(now_ns)`` once ``now_ns`` has passed the minute's end (plus
``grace_ns`` for ticks still on the wire), so a code that stops trading still
gets its last bar. A minute without trades has no bar. A tick older than its
code's open bar belongs to a bar already emitted: it is counted in
``late_ticks`` and left out, because an emitted bar never changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.messages import Bar

NS_PER_MINUTE = 60_000_000_000


@dataclass(slots=True)
class _Building:
    """The open bar of one code."""

    start_ns: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    value_won: int

    def bar(self, code: str) -> Bar:
        return Bar(code=code, ts_ns=self.start_ns, interval_s=60, open=self.open, high=self.high, low=self.low,
                   close=self.close, volume=self.volume, value_won=self.value_won)


class MinuteBars:
    """The open one-minute bar of every code, and the bars that closed."""

    def __init__(self, grace_ns: int = 0) -> None:
        self.grace_ns = grace_ns
        self._open: dict[str, _Building] = {}
        self.late_ticks = 0

    def on_tick(self, code: str, ts_ns: int, price: int, qty: int) -> list[Bar]:
        """Add one trade; the code's previous bar if this trade opens a later minute."""
        start = ts_ns - ts_ns % NS_PER_MINUTE
        building = self._open.get(code)
        if building is not None and start == building.start_ns:
            if price > building.high:
                building.high = price
            elif price < building.low:
                building.low = price
            building.close = price
            building.volume += qty
            building.value_won += price * qty
            return []
        if building is not None and start < building.start_ns:
            self.late_ticks += 1
            return []
        self._open[code] = _Building(start, price, price, price, price, qty, price * qty)
        return [] if building is None else [building.bar(code)]

    def flush(self, now_ns: int) -> list[Bar]:
        """The bars whose minute (and grace) is over at ``now_ns``, oldest first; codes then wait for a trade."""
        due = [code for code, b in self._open.items() if b.start_ns + NS_PER_MINUTE + self.grace_ns <= now_ns]
        bars = [self._open.pop(code).bar(code) for code in due]
        bars.sort(key=lambda b: (b.ts_ns, b.code))
        return bars

    def open_bar(self, code: str) -> Bar | None:
        """The bar being built for a code (not final), for a snapshot."""
        building = self._open.get(code)
        return None if building is None else building.bar(code)
