"""KRX rules: the tick table at every edge, rounding, daily limits, codes, and the XKRX sessions."""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left, bisect_right
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import krx
from core.instruments import load_instruments

MASTER = load_instruments(Path(__file__).resolve().parents[2] / "configs" / "instruments.csv")

# Every valid price up to 2,000,000 won, built from the table's ranges independently of krx.
_RANGES = ((1, 2_000, 1), (2_000, 5_000, 5), (5_000, 20_000, 10), (20_000, 50_000, 50),
           (50_000, 200_000, 100), (200_000, 500_000, 500), (500_000, 2_000_001, 1_000))
GRID = [p for lo, hi, step in _RANGES for p in range(lo, hi, step)]


def kst_ns(y: int, mo: int, d: int, h: int, mi: int, s: int = 0) -> int:
    """A Korean wall-clock time as ns UTC."""
    return int(dt.datetime(y, mo, d, h, mi, s, tzinfo=krx.KST).timestamp()) * 1_000_000_000


@pytest.mark.parametrize(
    ("price", "tick"),
    [(1, 1), (1_999, 1), (2_000, 5), (4_999, 5), (5_000, 10), (19_999, 10), (20_000, 50), (49_999, 50),
     (50_000, 100), (199_999, 100), (200_000, 500), (499_999, 500), (500_000, 1_000), (3_000_000, 1_000)],
)
def test_tick_size_changes_exactly_at_each_table_edge(price: int, tick: int) -> None:
    assert krx.tick_size(price) == tick
    assert krx.tick_size_array([price])[0] == tick


def test_etfs_use_a_five_won_tick_everywhere() -> None:
    assert {krx.tick_size(p, etf=True) for p in (1_000, 9_999, 50_000, 600_000)} == {5}


@pytest.mark.parametrize("edge", [2_000, 5_000, 20_000, 50_000, 200_000, 500_000])
def test_rounding_around_each_edge_lands_on_the_grid(edge: int) -> None:
    tick_below, tick_above = krx.tick_size(edge - 1), krx.tick_size(edge)
    assert tick_above > tick_below
    assert krx.round_to_tick(edge - 0.4, krx.Rounding.UP) == edge
    assert krx.round_to_tick(edge - 0.4, krx.Rounding.DOWN) == edge - tick_below
    assert krx.round_to_tick(edge + 1, krx.Rounding.DOWN) == edge
    assert krx.round_to_tick(edge + 1, krx.Rounding.UP) == edge + tick_above
    assert krx.round_to_tick(edge - tick_below / 2, krx.Rounding.NEAREST) == edge  # a tie goes up
    assert krx.round_to_tick(edge + tick_above / 2 - 0.01, krx.Rounding.NEAREST) == edge


def _reference(price: float, how: str) -> int:
    """Round by searching the explicit grid (ties to nearest go up)."""
    if price <= 1:
        return 1
    i = bisect_right(GRID, price)
    down = GRID[i - 1]
    j = bisect_left(GRID, price)
    up = GRID[j]
    if how == "down":
        return down
    if how == "up":
        return up
    return down if price - down < up - price else up


@given(st.floats(min_value=0.0, max_value=1_999_000.0, allow_nan=False), st.sampled_from(["down", "up", "nearest"]))
def test_rounding_matches_the_explicit_grid_scalar_and_vectorised(price: float, how: str) -> None:
    expected = _reference(price, how)
    assert krx.round_to_tick(price, how) == expected
    assert krx.round_to_tick_array(np.array([price]), how)[0] == expected


def test_vectorised_rounding_refuses_non_finite_prices() -> None:
    with pytest.raises(ValueError, match="finite"):
        krx.round_to_tick_array(np.array([71_000.0, np.nan]))


@given(st.integers(min_value=1, max_value=1_999_000))
def test_integer_prices_on_the_grid_are_left_alone(price: int) -> None:
    on_grid = krx.is_on_tick(price)
    assert on_grid == (GRID[bisect_left(GRID, price)] == price)
    if on_grid:
        assert krx.round_to_tick(price, "down") == krx.round_to_tick(price, "up") == price


@pytest.mark.parametrize(
    ("base", "lower", "upper"),
    [
        (71_000, 49_700, 92_300),
        (9_940, 6_960, 12_920),  # KRX's worked example (width 2,982 cut to 2,980)
        (2_005, 1_405, 2_605),  # width 601.5 cut to 600 at the base's 5-won tick, then the lower on its 1-won grid
        (1_000, 700, 1_300),
        (1, 1, 1),
        (500_000, 350_000, 650_000),
    ],
)
def test_daily_limits_follow_the_krx_rule(base: int, lower: int, upper: int) -> None:
    assert krx.limit_prices(base) == (lower, upper)
    lo, hi = krx.limit_prices_array(np.array([base]))
    assert (int(lo[0]), int(hi[0])) == (lower, upper)


@given(st.integers(min_value=1, max_value=1_500_000))
def test_daily_limits_are_on_the_grid_and_within_thirty_percent(base: int) -> None:
    lower, upper = krx.limit_prices(base)
    assert krx.is_on_tick(lower) and krx.is_on_tick(upper)
    assert lower <= base <= upper
    assert upper * 100 <= base * 130
    assert lower == 1 or lower * 100 >= base * 70
    lo, hi = krx.limit_prices_array(np.array([base]))
    assert (int(lo[0]), int(hi[0])) == (lower, upper)


@pytest.mark.parametrize("code", ["005930", "005935", "0013V0", "0013A0", "12345Z", "0000Y5"])
def test_code_syntax_accepts_digits_and_new_letter_codes(code: str) -> None:
    assert krx.is_valid_code_syntax(code)


@pytest.mark.parametrize("code", ["0013I0", "0013O0", "0013U0", "0013v0", "A05930", "05930", "0059300", "", " 05930"])
def test_code_syntax_refuses_bad_codes(code: str) -> None:
    assert not krx.is_valid_code_syntax(code)


def test_validate_code_names_the_reason() -> None:
    assert krx.validate_code("005930", MASTER) is None
    assert krx.validate_code("0013V0", MASTER) == "CODE_NOT_IN_MASTER"
    assert krx.validate_code("0013I0", MASTER) == "CODE_BAD_SYNTAX"
    assert krx.validate_code(5930, MASTER) == "CODE_NOT_A_STRING"
    assert krx.validate_code(None, MASTER) == "CODE_NOT_A_STRING"


def test_preferred_codes_map_to_their_common_share() -> None:
    assert krx.is_preferred("005935") and not krx.is_preferred("005930")
    assert krx.common_of("005935") == "005930"


@pytest.mark.parametrize(
    ("hhmmss", "session"),
    [
        ((8, 29, 59), krx.Session.CLOSED),
        ((8, 30, 0), krx.Session.PRE_OPEN),
        ((8, 59, 59), krx.Session.PRE_OPEN),
        ((9, 0, 0), krx.Session.CONTINUOUS),
        ((15, 19, 59), krx.Session.CONTINUOUS),
        ((15, 20, 0), krx.Session.CLOSING_AUCTION),
        ((15, 29, 59), krx.Session.CLOSING_AUCTION),
        ((15, 30, 0), krx.Session.CLOSED),
        ((15, 39, 59), krx.Session.CLOSED),
        ((15, 40, 0), krx.Session.AFTER_HOURS),
        ((17, 59, 59), krx.Session.AFTER_HOURS),
        ((18, 0, 0), krx.Session.CLOSED),
    ],
)
def test_sessions_of_an_ordinary_trading_day(hhmmss: tuple[int, int, int], session: krx.Session) -> None:
    assert krx.session_of(kst_ns(2026, 2, 13, *hhmmss)) is session


def test_lunar_new_year_and_the_weekend_before_it_are_closed() -> None:
    # 2026-02-13 is a Friday; 14-15 the weekend; 16-18 Seollal; trading resumes on Thursday the 19th
    assert krx.session_of(kst_ns(2026, 2, 14, 10, 0)) is krx.Session.CLOSED
    assert krx.session_of(kst_ns(2026, 2, 16, 10, 0)) is krx.Session.CLOSED
    assert krx.session_of(kst_ns(2026, 2, 19, 10, 0)) is krx.Session.CONTINUOUS
    assert krx.trading_days(dt.date(2026, 2, 12), dt.date(2026, 2, 20)) == [
        dt.date(2026, 2, 12), dt.date(2026, 2, 13), dt.date(2026, 2, 19), dt.date(2026, 2, 20)
    ]
    assert krx.next_trading_day(dt.date(2026, 2, 13)) == dt.date(2026, 2, 19)


def test_chuseok_2025_holidays_are_skipped() -> None:
    # 3 Oct National Foundation Day, 6-8 Oct Chuseok, 9 Oct Hangul Day
    assert krx.trading_days(dt.date(2025, 10, 1), dt.date(2025, 10, 13)) == [
        dt.date(2025, 10, 1), dt.date(2025, 10, 2), dt.date(2025, 10, 10), dt.date(2025, 10, 13)
    ]
    assert not krx.is_trading_day(dt.date(2025, 10, 7))
    assert krx.next_trading_day(dt.date(2025, 10, 2)) == dt.date(2025, 10, 10)


def test_year_end_closure_and_late_new_year_open() -> None:
    assert not krx.is_trading_day(dt.date(2025, 12, 31))
    # the first session of 2026 opens at 10:00, so 09:30 is still the opening auction
    assert krx.session_of(kst_ns(2026, 1, 2, 9, 30)) is krx.Session.PRE_OPEN
    assert krx.session_of(kst_ns(2026, 1, 2, 10, 0)) is krx.Session.CONTINUOUS
    open_ns, close_ns = krx.market_hours(dt.date(2026, 1, 2))
    assert (open_ns, close_ns) == (kst_ns(2026, 1, 2, 10, 0), kst_ns(2026, 1, 2, 15, 30))


def test_dates_outside_the_loaded_calendar_are_refused_clearly() -> None:
    with pytest.raises(krx.CalendarRangeError):
        krx.is_trading_day(dt.date(2035, 1, 2))
    assert krx.session_of(kst_ns(2035, 1, 2, 10, 0)) is krx.Session.CLOSED
    with pytest.raises(ValueError, match="not a KRX trading day"):
        krx.market_hours(dt.date(2026, 2, 14))


def test_kst_date_of_a_utc_timestamp() -> None:
    # 2026-02-13 23:30 UTC is already the 14th in Seoul
    ts = int(dt.datetime(2026, 2, 13, 23, 30, tzinfo=dt.timezone.utc).timestamp()) * 1_000_000_000
    assert krx.kst_date(ts) == dt.date(2026, 2, 14)
