"""KRX market rules as pure functions: tick sizes, price rounding, daily limits, codes."""

from __future__ import annotations

import re
from enum import StrEnum

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
    """The (lower, upper) daily limit prices: +-30% of the base, inside the grid.

    The upper limit rounds down and the lower limit rounds up to a valid tick.
    """
    raw_upper = base_price * (100 + LIMIT_RATE_PCT) // 100
    raw_lower = -(-base_price * (100 - LIMIT_RATE_PCT) // 100)
    upper = round_to_tick(raw_upper, Rounding.DOWN, etf=etf)
    lower = round_to_tick(raw_lower, Rounding.UP, etf=etf)
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
    AFTER_HOURS = "after_hours"  # 15:40-18:00
    CLOSED = "closed"
