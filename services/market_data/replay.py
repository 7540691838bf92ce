"""The replay source: recorded bars played back as a feed, paced by market time.

The feed is built from a folder in the recorder's layout (``<dir>/<YYYYMMDD>/
<code>.parquet|csv``): for each day, an ``md.session`` OPEN before its first bar,
each bar on ``md.bar.1m.<code>`` at its close time (start + interval), and an
``md.session`` CLOSED after the last. :class:`ReplayCursor` hands out what is
due after a given wall-clock elapsed time at ``speed`` market seconds per wall
second (0 = everything at once), so the service never sleeps on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.messages import Bar, Message, SessionEvent, SessionPhase
from services.market_data import recorder

NS = 1_000_000_000


def bar_topic(code: str) -> str:
    """The bus topic of a code's one-minute bars."""
    return f"md.bar.1m.{code}"


def load_feed(root: Path) -> list[tuple[int, str, Message]]:
    """Every recorded day under ``root`` as (market time ns, topic, message), in time order."""
    feed: list[tuple[int, str, Message]] = []
    for folder in recorder.day_dirs(root):
        bars: list[Bar] = [b for code_bars in recorder.read_day(root, folder.name).values() for b in code_bars]
        if not bars:
            continue
        bars.sort(key=lambda b: (b.ts_ns + b.interval_s * NS, b.code))
        first = bars[0].ts_ns
        last = bars[-1].ts_ns + bars[-1].interval_s * NS
        feed.append((first, "md.session", SessionEvent(phase=SessionPhase.OPEN, trading_date=folder.name, ts_ns=first)))
        feed.extend((b.ts_ns + b.interval_s * NS, bar_topic(b.code), b) for b in bars)
        feed.append((last, "md.session", SessionEvent(phase=SessionPhase.CLOSED, trading_date=folder.name, ts_ns=last)))
    return feed


@dataclass(slots=True)
class ReplayCursor:
    """Where the replay stands: hands out the messages due at a wall-clock elapsed time."""

    feed: list[tuple[int, str, Message]]
    speed: float = 60.0  # market seconds per wall second; 0 = as fast as possible
    position: int = 0
    _day_start_ns: int | None = field(default=None)

    @property
    def finished(self) -> bool:
        """Whether every message has been handed out."""
        return self.position >= len(self.feed)

    def due(self, elapsed_s: float, limit: int = 10_000) -> list[tuple[str, Message]]:
        """The (topic, message) pairs whose market time has come after ``elapsed_s`` wall seconds.

        Market time starts at the first message; gaps between days (nights,
        weekends) are skipped rather than waited out.
        """
        out: list[tuple[str, Message]] = []
        if self.finished:
            return out
        if self._day_start_ns is None:
            self._day_start_ns = self.feed[0][0]
        horizon = None if self.speed == 0 else self._day_start_ns + int(elapsed_s * self.speed * NS)
        while self.position < len(self.feed) and len(out) < limit:
            ts, topic, msg = self.feed[self.position]
            if horizon is not None and ts > horizon:
                break
            out.append((topic, msg))
            self.position += 1
            if isinstance(msg, SessionEvent) and msg.phase is SessionPhase.CLOSED and self.position < len(self.feed):
                # Skip the night: the next day starts where this one ended on the wall clock.
                gap = self.feed[self.position][0] - ts
                self._day_start_ns += gap
                if horizon is not None:
                    horizon += gap
        return out
