"""The gateway's market clock and session: KIS sends no session events, so the gateway tells them itself.

Against KIS's own server the market runs on Korean wall time: the phase comes
from the XKRX calendar and KRX's session times (``core.krx.session_of``).
Against the local kis-sim, whose market clock can run faster than the wall,
the phase, trading date and market time come from kis-sim's ``/kis-sim/status``
(a rehearsal-only endpoint), polled about once a second and extrapolated by
the clock speed in between.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import httpx

from core.krx import KST, Session, is_trading_day, kst_date, session_of
from core.messages import SessionPhase

_PHASE_OF_SESSION = {
    Session.PRE_OPEN: SessionPhase.PRE_OPEN,
    Session.CONTINUOUS: SessionPhase.OPEN,
    Session.CLOSING_AUCTION: SessionPhase.CLOSING,
}
PRE_OPEN_HOUR = 8


@dataclass(slots=True)
class MarketTime:
    """The market's time, trading date and phase at one moment."""

    ts_ns: int
    trading_date: str
    phase: SessionPhase
    speed: float
    known: bool = True  # False until the clock could be read (nothing is announced from a guess)


class WallClock:
    """KIS's own market: Korean wall time, speed 1."""

    speed = 1.0

    def now(self) -> MarketTime:
        ts = time.time_ns()
        phase = _PHASE_OF_SESSION.get(session_of(ts), SessionPhase.CLOSED)
        return MarketTime(ts, _trading_date(ts), phase, 1.0)

    def poll(self) -> str:
        return ""


def _trading_date(ts_ns: int) -> str:
    """Today from the pre-open of a trading day on; the last trading day before that."""
    day = kst_date(ts_ns)
    local = dt.datetime.fromtimestamp(ts_ns / 1e9, KST)
    if not (is_trading_day(day) and local.hour >= PRE_OPEN_HOUR):
        day -= dt.timedelta(days=1)
        while not is_trading_day(day):
            day -= dt.timedelta(days=1)
    return day.strftime("%Y%m%d")


class SimClock:
    """The local kis-sim's market clock, read from its status endpoint."""

    POLL_S = 1.0

    def __init__(self, rest_url: str, timeout_s: float = 2.0) -> None:
        self.http = httpx.Client(base_url=rest_url, timeout=timeout_s)
        self._at: MarketTime | None = None
        self._at_mono = 0.0
        self._next_poll = 0.0

    @property
    def speed(self) -> float:
        return self._at.speed if self._at else 1.0

    def poll(self) -> str:
        """Read kis-sim's clock when due; '' or why it could not be read."""
        mono = time.monotonic()
        if mono < self._next_poll:
            return ""
        self._next_poll = mono + self.POLL_S
        try:
            r = self.http.get("/kis-sim/status")
            body = r.json()
            ts = int(dt.datetime.fromisoformat(body["market_time"]).timestamp() * 1e9)
            self._at = MarketTime(ts, str(body["trading_date"]), SessionPhase(body["session"]),
                                  float(body.get("clock_speed") or 1.0))
            self._at_mono = mono
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            return f"kis-sim status: {exc}"
        return ""

    def now(self) -> MarketTime:
        if self._at is None:
            self.poll()
        if self._at is None:
            ts = time.time_ns()
            return MarketTime(ts, _trading_date(ts), SessionPhase.CLOSED, 1.0, known=False)
        at = self._at
        ts = at.ts_ns + int((time.monotonic() - self._at_mono) * at.speed * 1e9)
        return MarketTime(ts, at.trading_date, at.phase, at.speed)

    def close(self) -> None:
        self.http.close()


def hhmmss_ns(trading_date: str, hhmmss: str) -> int:
    """A KIS time of day (KST HHMMSS) on a trading date, in ns UTC."""
    day = dt.datetime.strptime(trading_date + hhmmss, "%Y%m%d%H%M%S").replace(tzinfo=KST)
    return int(day.timestamp()) * 1_000_000_000
