"""KRX market rules as pure functions: tick sizes, price rounding, daily limits, codes, sessions.

Sessions follow the XKRX calendar of ``exchange_calendars`` (built once, lazily,
for 2020-2030). Times of day are Korea Standard Time (UTC+9); timestamps passed
in are nanoseconds since the epoch, UTC.
"""

from __future__ import annotations

import datetime as dt
import re
import warnings
from bisect import bisect_left, bisect_right
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from core.instruments import Instrument

CODE_RE = re.compile(r"^[0-9]{4}[0-9A-HJ-NP-TV-Z][0-9A-Z]$")

# (upper bound exclusive, tick) for KOSPI and KOSDAQ since 2023-01-25.
_TICK_TABLE: tuple[tuple[int, int], ...] = (
    (2_000, 1),
    (5_000, 5),
    (20_000, 10),
    (50_000, 50),
    (200_000, 100),
    (500_000, 500),
)
_TOP_TICK = 1_000
ETF_TICK = 5
LIMIT_RATE_PCT = 30


class Rounding(StrEnum):
    DOWN = "down"
    UP = "up"
    NEAREST = "nearest"


def tick_size(price: int, *, etf: bool = False) -> int:
    """Tick size in won for a price (2023 table; ETFs and ETNs use 5 won)."""
    if etf:
        return ETF_TICK
    for bound, tick in _TICK_TABLE:
        if price < bound:
            return tick
    return _TOP_TICK


def is_on_tick(price: int, *, etf: bool = False) -> bool:
    """Whether a positive price lies on the tick grid."""
    return price > 0 and price % tick_size(price, etf=etf) == 0


def round_to_tick(price: float | int, how: Rounding | str = Rounding.NEAREST, *, etf: bool = False) -> int:
    """Round a price onto the tick grid (down for sells, up for buys, or nearest)."""
    if type(how) is not Rounding:  # the enum call only for text: order entry rounds every price
        how = Rounding(how)
    p = int(price) if how is Rounding.DOWN else price
    if p < 1:
        return 1
    tick = tick_size(int(p), etf=etf)
    if how is Rounding.DOWN:
        return int(p) // tick * tick
    if how is Rounding.UP:
        up = -(-int(-(-p // 1)) // tick) * tick
        # crossing a tick boundary upward can land on a coarser grid
        t2 = tick_size(up, etf=etf)
        return -(-up // t2) * t2
    down = int(p) // tick * tick
    up = down + tick
    t2 = tick_size(up, etf=etf)
    up = -(-up // t2) * t2
    return down if (p - down) < (up - p) else up


def round_for_side(price: float | int, side: str, *, etf: bool = False) -> int:
    """Round a price for an order side: a buy rounds up, a sell rounds down."""
    return round_to_tick(price, Rounding.UP if side == "buy" else Rounding.DOWN, etf=etf)


def limit_prices(base_price: int, *, etf: bool = False) -> tuple[int, int]:
    """The (lower, upper) daily limit prices for a base price (usually the previous close).

    KRX rule: the limit width is 30% of the base, cut down to a multiple of the
    base price's tick; upper = base + width rounded down to its own tick, lower =
    base - width rounded up to its own tick (never below 1 won).
    """
    base_tick = tick_size(base_price, etf=etf)
    width = base_price * LIMIT_RATE_PCT // 100 // base_tick * base_tick
    upper = round_to_tick(base_price + width, Rounding.DOWN, etf=etf)
    lower = round_to_tick(max(base_price - width, 1), Rounding.UP, etf=etf)
    return lower, upper


def is_valid_code_syntax(code: str) -> bool:
    """Whether a string has the syntax of a KRX stock code (letters allowed since 2024)."""
    return isinstance(code, str) and CODE_RE.match(code) is not None


def is_preferred(code: str) -> bool:
    """Whether a code is a preferred share class (last character 5, 7, 9, ...)."""
    return is_valid_code_syntax(code) and code[-1] != "0"


def common_of(code: str) -> str:
    """The common share code that a preferred code belongs to."""
    return code[:-1] + "0"


class Session(StrEnum):
    """The trading session a moment falls in (KST times)."""

    PRE_OPEN = "pre_open"  # 08:30-09:00 opening call auction (one price at 09:00)
    CONTINUOUS = "continuous"  # 09:00-15:20
    CLOSING_AUCTION = "closing_auction"  # 15:20-15:30 (one price at 15:30)
    # 15:40-18:00: trades at the closing price until 16:00, then single-price auctions every 10 min
    AFTER_HOURS = "after_hours"
    CLOSED = "closed"


# --- vectorised tick grid (for the simulator and the back-tester) -------------

# numpy is imported by these functions only: the back office's processes, which round one price at a time, run without it
@lru_cache(maxsize=1)
def _tick_grid() -> tuple[Any, Any, Any]:
    """(lower bounds as float64, ticks as int64, ticks as float64) of the tick table."""
    import numpy as np

    bounds = np.array([bound for bound, _ in _TICK_TABLE], dtype=np.int64)
    ticks = np.array([tick for _, tick in _TICK_TABLE] + [_TOP_TICK], dtype=np.int64)
    return bounds.astype(np.float64), ticks, ticks.astype(np.float64)


def tick_size_array(prices: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Tick sizes in won for an array of prices (same table as ``tick_size``)."""
    import numpy as np

    bounds_f, ticks, _ = _tick_grid()
    return ticks[np.searchsorted(bounds_f, np.asarray(prices, dtype=np.float64), side="right")]  # type: ignore[no-any-return]


def round_to_tick_array(prices: npt.ArrayLike, how: Rounding | str = Rounding.NEAREST) -> npt.NDArray[np.int64]:
    """Round an array of prices onto the tick grid at once; the result is int64 won, at least 1.

    Agrees element by element with ``round_to_tick``. Every grid boundary is a
    multiple of the coarser tick above it, so one step up from the last tick
    below a boundary lands exactly on it.
    """
    import numpy as np

    how = Rounding(how)
    p = np.asarray(prices, dtype=np.float64)
    if not np.isfinite(p).all():
        raise ValueError("prices to round must be finite numbers")
    p = np.maximum(p, 1.0)
    bounds_f, _, ticks_f = _tick_grid()
    tick = ticks_f[np.searchsorted(bounds_f, p, side="right")]
    down = np.floor(p / tick) * tick
    if how is Rounding.DOWN:
        return down.astype(np.int64)
    if how is Rounding.UP:
        return np.where(down == p, down, down + tick).astype(np.int64)
    return np.where((p - down) < (down + tick - p), down, down + tick).astype(np.int64)


def limit_prices_array(base_prices: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The (lower, upper) daily limit prices for an array of base prices (see ``limit_prices``)."""
    import numpy as np

    base = np.asarray(base_prices, dtype=np.int64)
    base_tick = tick_size_array(base)
    width = base * LIMIT_RATE_PCT // 100 // base_tick * base_tick
    upper = round_to_tick_array(base + width, Rounding.DOWN)
    lower = round_to_tick_array(np.maximum(base - width, 1), Rounding.UP)
    return lower, upper


# --- codes against the instrument master ----------------------------------------


class CodeRejection(StrEnum):
    """Why a stock code is refused."""

    NOT_A_STRING = "CODE_NOT_A_STRING"
    BAD_SYNTAX = "CODE_BAD_SYNTAX"
    NOT_IN_MASTER = "CODE_NOT_IN_MASTER"


def validate_code(code: Any, master: Mapping[str, Instrument]) -> str | None:
    """Why a code may not be traded (a ``CodeRejection`` reason), or None when it is a listed code."""
    if not isinstance(code, str):
        return CodeRejection.NOT_A_STRING.value
    if CODE_RE.match(code) is None:
        return CodeRejection.BAD_SYNTAX.value
    if code not in master:
        return CodeRejection.NOT_IN_MASTER.value
    return None


# --- the XKRX calendar and the sessions of a trading day ----------------------

KST = dt.timezone(dt.timedelta(hours=9), "KST")
CALENDAR_START = dt.date(2020, 1, 1)
CALENDAR_END = dt.date(2030, 12, 31)
_NS_PER_MIN = 60_000_000_000

# Session boundaries as minutes relative to the calendar's open (o) or close (c):
# pre-open o-30, continuous o, closing auction c-10, closed c, after hours c+10 .. c+150.
_PRE_OPEN_MIN = 30
_CLOSING_AUCTION_MIN = 10
_AFTER_HOURS_START_MIN = 10
_AFTER_HOURS_END_MIN = 150


class CalendarRangeError(ValueError):
    """A date outside the years the XKRX calendar is loaded for."""


_CalendarData = tuple[frozenset[dt.date], tuple[dt.date, ...], dict[dt.date, tuple[int, int]]]
_preloaded_calendar: _CalendarData | None = None


def calendar_table() -> list[tuple[str, int, int]]:
    """The XKRX calendar as plain rows (ISO date, open ns, close ns): what a process may cache for ``preload_calendar``."""
    _, days, hours = _calendar()
    return [(d.isoformat(), *hours[d]) for d in days]


def preload_calendar(rows: list[tuple[str, int, int]]) -> bool:
    """Use rows of ``calendar_table()`` instead of building the calendar (which takes about a second of CPU).

    Returns False (and changes nothing) once the calendar is already loaded, or
    for rows that do not cover ``CALENDAR_START``..``CALENDAR_END``; ValueError
    for rows that are not dates and integer times in order.
    """
    global _preloaded_calendar
    if _calendar.cache_info().currsize:
        return False
    data = _calendar_of(rows)
    days = data[1]
    if not days or (days[0] - CALENDAR_START).days > 7 or (CALENDAR_END - days[-1]).days > 7:
        return False
    _preloaded_calendar = data
    return True


def _calendar_of(rows: list[tuple[str, int, int]]) -> _CalendarData:
    days = tuple(dt.date.fromisoformat(d) for d, _, _ in rows)
    hours = {day: (int(o), int(c)) for day, (_, o, c) in zip(days, rows)}
    if list(days) != sorted(set(days)) or any(o >= c for o, c in hours.values()):
        raise ValueError("calendar rows must be distinct dates in order, each opening before it closes")
    return frozenset(days), days, hours


def build_calendar_table() -> list[tuple[str, int, int]]:
    """The XKRX calendar's rows built from exchange_calendars (a slow import, pandas with it, about a second)."""
    import exchange_calendars as xc
    import numpy as np

    with warnings.catch_warnings():
        # exchange_calendars still reads Series.values on tz-aware columns (a pandas 3 deprecation)
        warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
        cal = xc.get_calendar("XKRX", start=CALENDAR_START.isoformat(), end=CALENDAR_END.isoformat())
    schedule = cal.schedule
    days = [ts.date() for ts in schedule.index]
    opens = schedule["open"].dt.tz_convert(None).to_numpy().astype("datetime64[ns]").astype(np.int64)
    closes = schedule["close"].dt.tz_convert(None).to_numpy().astype("datetime64[ns]").astype(np.int64)
    return [(d.isoformat(), int(o), int(c)) for d, o, c in zip(days, opens, closes)]


@lru_cache(maxsize=1)
def _calendar() -> _CalendarData:
    """The XKRX trading days and their (open, close) in ns UTC: preloaded, from the disk cache, or built once."""
    if _preloaded_calendar is not None:
        return _preloaded_calendar
    # the copy on disk: a process that finds it never imports pandas for it
    from core import calendar_cache

    calendar_cache.load_calendar()
    if _preloaded_calendar is not None:
        return _preloaded_calendar
    return _calendar_of(build_calendar_table())  # rows the library gives for a shorter range: used as they are


def _check_range(day: dt.date) -> None:
    if not CALENDAR_START <= day <= CALENDAR_END:
        raise CalendarRangeError(f"{day} is outside the XKRX calendar range {CALENDAR_START}..{CALENDAR_END}")


def is_trading_day(day: dt.date) -> bool:
    """Whether KRX trades on a date (weekends, holidays and the year-end closure are not)."""
    _check_range(day)
    return day in _calendar()[0]


def trading_days(start: dt.date, end: dt.date) -> list[dt.date]:
    """The KRX trading days from start to end, both inclusive, in order."""
    _check_range(start)
    _check_range(end)
    days = _calendar()[1]
    return list(days[bisect_left(days, start) : bisect_right(days, end)])


def next_trading_day(day: dt.date) -> dt.date:
    """The first KRX trading day strictly after a date."""
    _check_range(day)
    days = _calendar()[1]
    i = bisect_right(days, day)
    if i >= len(days):
        raise CalendarRangeError(f"no trading day after {day} within the loaded calendar")
    return days[i]


def market_hours(day: dt.date) -> tuple[int, int]:
    """(open, close) of a trading day in ns UTC: usually 09:00 and 15:30 KST, later on late-open days."""
    _check_range(day)
    hours = _calendar()[2].get(day)
    if hours is None:
        raise ValueError(f"{day} is not a KRX trading day")
    return hours


def kst_date(ts_ns: int) -> dt.date:
    """The Korean calendar date of a UTC timestamp in nanoseconds."""
    return dt.datetime.fromtimestamp(ts_ns // 1_000_000_000, KST).date()


def session_of(ts_ns: int) -> Session:
    """The trading session a UTC timestamp (ns) falls in, by the XKRX calendar and KST session times.

    The opening auction takes the 30 minutes before the open, the closing auction
    the 10 minutes before the close; after-hours trading runs from 10 to 150
    minutes after the close. Everything else, weekends and holidays included, is
    CLOSED. Late-open days (first day of the year, the CSAT day) shift with the
    calendar's open and close.
    """
    day = kst_date(ts_ns)
    if not CALENDAR_START <= day <= CALENDAR_END:
        return Session.CLOSED
    hours = _calendar()[2].get(day)
    if hours is None:
        return Session.CLOSED
    open_ns, close_ns = hours
    if open_ns - _PRE_OPEN_MIN * _NS_PER_MIN <= ts_ns < open_ns:
        return Session.PRE_OPEN
    if open_ns <= ts_ns < close_ns - _CLOSING_AUCTION_MIN * _NS_PER_MIN:
        return Session.CONTINUOUS
    if close_ns - _CLOSING_AUCTION_MIN * _NS_PER_MIN <= ts_ns < close_ns:
        return Session.CLOSING_AUCTION
    if close_ns + _AFTER_HOURS_START_MIN * _NS_PER_MIN <= ts_ns < close_ns + _AFTER_HOURS_END_MIN * _NS_PER_MIN:
        return Session.AFTER_HOURS
    return Session.CLOSED
