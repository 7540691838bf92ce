"""The price simulator: stylised facts measured on generated data, the KRX grid and limits, determinism."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import krx
from core.instruments import load_instruments
from core.simulator import (
    BAR_COLUMNS,
    DayBars,
    MarketSimulator,
    SimulatorParams,
    simulate,
    synthetic_instruments,
    ticks_from_bar,
    universe,
)

MASTER = list(load_instruments(Path(__file__).resolve().parents[2] / "configs" / "instruments.csv").values())
CODES = [i.code for i in MASTER]
SAMSUNG, SAMSUNG_PREF = CODES.index("005930"), CODES.index("005935")


@pytest.fixture(scope="module")
def year() -> list[DayBars]:
    """About a year of the master's 15 instruments."""
    sim = MarketSimulator(MASTER, seed=11, start_date=dt.date(2024, 1, 1))
    return [sim.next_day() for _ in range(240)]


@pytest.fixture(scope="module")
def samsung_pair_long() -> list[DayBars]:
    """Samsung common and preferred over about three years, for the slow discount dynamics."""
    pair = [MASTER[SAMSUNG], MASTER[SAMSUNG_PREF]]
    sim = MarketSimulator(pair, seed=5, start_date=dt.date(2022, 1, 1))
    return [sim.next_day() for _ in range(700)]


def _full_days(days: list[DayBars]) -> list[DayBars]:
    return [d for d in days if d.close.shape[1] == 381]


def _minute_returns(days: list[DayBars]) -> np.ndarray:
    """Continuous-session 1-minute log returns, (days, instruments, minutes)."""
    close = np.stack([d.close for d in _full_days(days)]).astype(float)
    return np.diff(np.log(close[:, :, :-1]), axis=2)


def _autocorrelation(x: np.ndarray, lag: int) -> float:
    x = x - x.mean()
    return float((x[:-lag] * x[lag:]).mean() / x.var())


def test_one_minute_returns_have_heavy_tails(year: list[DayBars]) -> None:
    r = _minute_returns(year)
    for k in range(len(CODES)):
        x = r[:, k, :].ravel() - r[:, k, :].mean()
        excess_kurtosis = (x**4).mean() / (x**2).mean() ** 2 - 3
        assert excess_kurtosis > 3, CODES[k]


def test_absolute_returns_are_autocorrelated_for_thirty_minutes(year: list[DayBars]) -> None:
    r = _minute_returns(year)
    for k in (SAMSUNG, CODES.index("000660"), CODES.index("247540")):
        a = np.abs(r[:, k, :]).ravel()
        acf = [_autocorrelation(a, lag) for lag in range(1, 31)]
        assert min(acf) > 0, (CODES[k], acf)


def test_volume_is_u_shaped_with_auction_spikes(year: list[DayBars]) -> None:
    volume = np.stack([d.volume for d in _full_days(year)]).astype(float).mean(axis=(0, 1))
    midday = volume[150:230].mean()  # about 11:30 to 12:50
    assert midday < volume[1:10].mean()  # the first continuous minutes
    assert midday < volume[370:380].mean()  # the last continuous minutes
    assert volume[0] > volume[1:10].mean()  # the opening auction lands in the first bar
    assert volume[380] > volume[370:380].mean()  # the closing auction


def test_intraday_volatility_is_u_shaped(year: list[DayBars]) -> None:
    r = np.abs(_minute_returns(year)).mean(axis=(0, 1))
    assert r[150:230].mean() < r[0:10].mean()
    assert r[150:230].mean() < r[360:379].mean()


def test_large_cap_daily_volatility_is_between_one_and_three_percent(year: list[DayBars]) -> None:
    closes = np.array([d.closing_price for d in year], dtype=float)
    daily = np.diff(np.log(closes), axis=0).std(axis=0)
    for k, ins in enumerate(MASTER):
        if ins.kospi200:
            assert 0.01 < daily[k] < 0.03, (ins.code, daily[k])


def test_overnight_gaps_happen(year: list[DayBars]) -> None:
    gaps = np.array([d.open[:, 0] / d.base_price - 1 for d in year])
    assert (np.abs(gaps) > 0.01).mean() > 0.05


def test_preferred_discount_stays_within_bounds_and_mean_reverts(samsung_pair_long: list[DayBars]) -> None:
    common = np.concatenate([d.close[0] for d in samsung_pair_long]).astype(float)
    pref = np.concatenate([d.close[1] for d in samsung_pair_long]).astype(float)
    discount = 1 - pref / common
    assert discount.min() > 0.02 and discount.max() < 0.26  # bounds 3%..25%, plus a tick of rounding
    daily = np.log(np.array([d.closing_price[1] / d.closing_price[0] for d in samsung_pair_long]))
    assert abs(daily.mean() - np.log(1 - 0.17)) < 0.05
    phi = np.polyfit(daily[:-1], daily[1:], 1)[0]
    half_life_days = np.log(2) / -np.log(phi)
    assert 5 < half_life_days < 60  # weeks, not days and not forever


def test_foreign_flows_persist_chase_returns_and_move_prices_a_day_later(year: list[DayBars]) -> None:
    flows = np.array([d.foreign_net_qty[:, -1] for d in year], dtype=float)  # final daily figures
    closes = np.array([d.closing_price for d in year], dtype=float)
    returns = np.diff(np.log(closes), axis=0)  # returns[t-1] is day t's return
    persistence, chasing, lagged_impact, same_day_news = [], [], [], []
    for k in range(len(CODES)):
        f = flows[:, k]
        persistence.append(_autocorrelation(f, 1))
        chasing.append(np.corrcoef(f[2:], returns[:-1, k])[0, 1])  # flow on day t vs return on day t-1
        lagged_impact.append(np.corrcoef(f[1:-1], returns[1:, k])[0, 1])  # flow on day t-1 vs return on day t
        # what today's flow says beyond yesterday's flow and return: nothing about today's return
        x = np.column_stack([np.ones(len(f) - 2), f[1:-1], returns[:-1, k]])
        beta, *_ = np.linalg.lstsq(x, f[2:], rcond=None)
        news = f[2:] - x @ beta
        same_day_news.append(np.corrcoef(news, returns[1:, k])[0, 1])
    assert np.mean(persistence) > 0.3 and min(persistence) > 0.2
    assert np.mean(chasing) > 0.1
    assert np.mean(lagged_impact) > 0.05
    assert abs(np.mean(same_day_news)) < 0.04  # no report of a day reveals that day's drift


def test_investor_classes_sum_to_zero_in_every_report(year: list[DayBars]) -> None:
    for d in year[:20]:
        assert d.institution_net_qty is not None and d.individual_net_qty is not None
        assert (d.foreign_net_qty + d.institution_net_qty + d.individual_net_qty == 0).all()
        assert (d.institution_net_qty != 0).any() and (d.individual_net_qty != 0).any()
    frame = year[0].flows_frame()
    assert (frame["foreign_net_qty"] + frame["institution_net_qty"] + frame["individual_net_qty"] == 0).all()


def test_the_null_world_keeps_volatility_and_drops_every_effect() -> None:
    pair = [i for i in MASTER if i.code in ("005930", "005935", "000660")]
    worlds = {}
    for name, params in (("sim", SimulatorParams()), ("null", SimulatorParams.null())):
        sim = MarketSimulator(pair, seed=5, start_date=dt.date(2022, 1, 1), params=params)
        worlds[name] = [sim.next_day() for _ in range(500)]
    vol = {k: np.std(np.diff(np.log([d.closing_price[2] for d in v]))) for k, v in worlds.items()}
    assert 0.7 < vol["null"] / vol["sim"] < 1.3
    null = worlds["null"]
    flows = np.array([d.foreign_net_qty[2, -1] for d in null], dtype=float)
    returns = np.diff(np.log([d.closing_price[2] for d in null]))
    assert abs(np.corrcoef(flows[:-1], returns)[0, 1]) < 0.1  # yesterday's flow does not move today's price
    discount = np.log([d.closing_price[1] / d.closing_price[0] for d in null])
    phi = np.polyfit(discount[:-1], discount[1:], 1)[0]
    assert phi > 0.97  # a walk, not the weeks-long reversion of the simulated world


def test_provisional_flows_come_at_the_published_times_then_the_final_figure() -> None:
    day = MarketSimulator(MASTER, seed=1, start_date=dt.date(2026, 3, 3)).next_day()
    times = [dt.datetime.fromtimestamp(t // 10**9, krx.KST).strftime("%H:%M") for t in day.flow_ts_ns]
    assert times == ["09:30", "11:20", "13:20", "14:30", "15:30"]
    assert day.flow_provisional.tolist() == [True, True, True, True, False]
    frame = day.flows_frame()
    assert len(frame) == 5 * len(CODES) and frame["foreign_net_qty"].dtype == np.int64


def test_earnings_come_out_once_a_quarter_per_stock_on_a_day_of_its_own(year: list[DayBars]) -> None:
    for prev, cur in zip(year, year[1:]):
        assert cur.announced is not None and cur.dps is not None
        quiet = ~cur.announced
        assert np.array_equal(prev.eps[quiet], cur.eps[quiet]) and np.array_equal(prev.bps[quiet], cur.bps[quiet])
    announced_on = [[d.trading_date for d in year if d.announced[k]] for k in range(len(CODES))]
    for k, dates in enumerate(announced_on):
        quarters = [(d.year, (d.month - 1) // 3) for d in dates]
        assert len(quarters) == len(set(quarters)) >= 3, CODES[k]  # once a quarter (a year of data)
        for d in dates:
            quarter_end = dt.date(d.year, ((d.month - 1) // 3) * 3 + 1, 1) - dt.timedelta(days=1)
            assert 20 <= (d - quarter_end).days <= 45 + 4  # plus a weekend or holiday
    assert len({dates[0] for dates in announced_on if dates}) > 1  # not every stock on one day
    frame = year[30].fundamentals_frame()
    assert list(frame.columns) == ["ts_ns", "code", "effective_date", "eps", "bps", "dps"]
    assert len(frame) == int(year[30].announced.sum())


def _assert_on_grid_and_within_limits(days: list[DayBars]) -> None:
    previous_close = None
    for d in days:
        for prices in (d.open, d.high, d.low, d.close):
            assert np.array_equal(krx.round_to_tick_array(prices, "down"), prices)
            assert (prices >= d.lower_limit[:, None]).all() and (prices <= d.upper_limit[:, None]).all()
        assert (d.low <= np.minimum(d.open, d.close)).all() and (d.high >= np.maximum(d.open, d.close)).all()
        assert (d.volume > 0).all()
        assert (d.value_won >= d.volume * d.low).all() and (d.value_won <= d.volume * d.high).all()
        lower, upper = krx.limit_prices_array(d.base_price)
        assert np.array_equal(lower, d.lower_limit) and np.array_equal(upper, d.upper_limit)
        if previous_close is not None:
            assert np.array_equal(d.base_price, previous_close)
        previous_close = d.closing_price


def test_prices_are_on_the_tick_grid_and_inside_the_daily_limits(year: list[DayBars]) -> None:
    _assert_on_grid_and_within_limits(year)


def test_limits_hold_even_in_a_wild_market() -> None:
    wild = replace(SimulatorParams(), daily_vol=0.25, jump_sd=0.3, jumps_per_day=2.0)
    sim = MarketSimulator(MASTER, seed=3, start_date=dt.date(2026, 3, 3), params=wild)
    days = [sim.next_day() for _ in range(10)]
    _assert_on_grid_and_within_limits(days)
    at_a_limit = sum(int(((d.close == d.upper_limit[:, None]) | (d.close == d.lower_limit[:, None])).any()) for d in days)
    assert at_a_limit > 0  # the limits actually bound


def test_day_layout_is_the_minutes_of_the_continuous_session_then_the_closing_auction() -> None:
    day = MarketSimulator(MASTER, seed=1, start_date=dt.date(2026, 3, 3)).next_day()
    assert day.close.shape == (len(CODES), 381)
    kst = [dt.datetime.fromtimestamp(t // 10**9, krx.KST) for t in day.ts_ns]
    assert kst[0].strftime("%H:%M") == "09:00" and kst[379].strftime("%H:%M") == "15:19"
    assert kst[380].strftime("%H:%M") == "15:30"
    auction = (day.open[:, -1], day.high[:, -1], day.low[:, -1], day.close[:, -1])
    assert all(np.array_equal(auction[0], p) for p in auction)
    assert np.array_equal(day.open[:, 1:380], day.close[:, 0:379])
    frame = day.to_frame()
    assert tuple(frame.columns) == BAR_COLUMNS and len(frame) == 381 * len(CODES)
    assert all(frame[c].dtype == np.int64 for c in BAR_COLUMNS if c != "code")


def test_late_open_day_follows_the_calendar() -> None:
    sim = MarketSimulator(MASTER, seed=1, start_date=dt.date(2025, 12, 31))  # closed: starts on 2 Jan 2026
    day = sim.next_day()
    assert day.trading_date == dt.date(2026, 1, 2)
    assert dt.datetime.fromtimestamp(day.ts_ns[0] // 10**9, krx.KST).strftime("%H:%M") == "10:00"
    assert day.close.shape[1] == 321  # 10:00-15:20 continuous, then the closing auction
    assert sim.next_day().trading_date == dt.date(2026, 1, 5)


def test_same_seed_same_market_and_another_seed_another() -> None:
    a, fa = simulate(MASTER, 42, dt.date(2026, 3, 3), 3)
    b, fb = simulate(MASTER, 42, dt.date(2026, 3, 3), 3)
    c, _ = simulate(MASTER, 43, dt.date(2026, 3, 3), 3)
    assert a.equals(b) and fa.equals(fb)
    assert not a["close"].equals(c["close"])


def test_batch_equals_streaming_day_by_day() -> None:
    batch, _ = simulate(MASTER, 9, dt.date(2026, 3, 3), 2)
    sim = MarketSimulator(MASTER, 9, dt.date(2026, 3, 3))
    frames = [sim.next_day().to_frame() for _ in range(2)]
    streamed = np.concatenate([f[["ts_ns", "open", "high", "low", "close", "volume", "value_won"]].to_numpy() for f in frames])
    assert np.array_equal(batch[["ts_ns", "open", "high", "low", "close", "volume", "value_won"]].to_numpy(), streamed)
    assert list(batch["code"].astype(str)) == [c for f in frames for c in f["code"].astype(str)]


def test_synthetic_instruments_scale_the_universe() -> None:
    hundred = universe(MASTER, 100)
    codes = [i.code for i in hundred]
    assert len(set(codes)) == 100 and all(krx.is_valid_code_syntax(c) for c in codes)
    assert codes[: len(MASTER)] == CODES
    assert all(krx.is_on_tick(i.last_close) for i in hundred)
    day = MarketSimulator(hundred, 1, dt.date(2026, 3, 3)).next_day()
    assert day.close.shape == (100, 381)
    assert synthetic_instruments(3, seed=1) == synthetic_instruments(3, seed=1)


def test_bad_universes_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        MarketSimulator([], 1, dt.date(2026, 3, 3))
    with pytest.raises(ValueError, match="unique"):
        MarketSimulator([MASTER[0], MASTER[0]], 1, dt.date(2026, 3, 3))


@st.composite
def bars(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    """A valid OHLCV bar on the tick grid."""
    low = krx.round_to_tick(draw(st.integers(1_000, 900_000)), "up")
    high = krx.round_to_tick(low * draw(st.floats(1.0, 1.05)), "down")
    high = max(high, low)
    inside = st.integers(low, high).map(lambda p: min(max(krx.round_to_tick(p, "nearest"), low), high))
    return draw(inside), high, low, draw(inside), draw(st.integers(1, 200_000))


@settings(max_examples=200, deadline=None)
@given(bars(), st.integers(0, 2**32))
def test_ticks_reproduce_their_bar_exactly(bar: tuple[int, int, int, int, int], seed: int) -> None:
    open_, high, low, close, volume = bar
    ts = 1_772_496_000_000_000_000
    ticks = ticks_from_bar("005930", ts, open_, high, low, close, volume, seed)
    assert ticks.qty.sum() == volume and (ticks.qty > 0).all()
    assert (np.diff(ticks.ts_ns) > 0).all() and ticks.ts_ns[0] == ts and ticks.ts_ns[-1] < ts + 60 * 10**9
    assert ticks.price[-1] == close
    assert np.array_equal(krx.round_to_tick_array(ticks.price, "down"), ticks.price)
    if len(ticks.price) > 1:
        assert ticks.price[0] == open_
    if volume >= 4:
        assert ticks.price.max() == high and ticks.price.min() == low
    again = ticks_from_bar("005930", ts, open_, high, low, close, volume, seed)
    assert np.array_equal(again.price, ticks.price) and np.array_equal(again.ts_ns, ticks.ts_ns)


def test_an_auction_bar_is_one_print_and_a_bad_bar_is_refused() -> None:
    ticks = ticks_from_bar("005930", 0, 71_000, 71_000, 71_000, 71_000, 5_000, seed=1)
    assert ticks.price.tolist() == [71_000] and ticks.qty.tolist() == [5_000]
    assert len(ticks_from_bar("005930", 0, 71_000, 71_000, 71_000, 71_000, 0, seed=1).price) == 0
    with pytest.raises(ValueError, match="not a valid OHLC"):
        ticks_from_bar("005930", 0, 71_000, 70_000, 71_500, 71_000, 10, seed=1)


def test_a_sharp_minute_is_followed_by_a_two_minute_single_price_auction(year: list[DayBars]) -> None:
    halted = 0
    for d in year:
        assert d.vi is not None and not d.vi[:, -1].any()  # the closing auction is its own
        for i, k in np.argwhere(d.vi):
            assert d.open[i, k] == d.high[i, k] == d.low[i, k] == d.close[i, k]  # one price per auction minute
            if not d.vi[i, k - 1]:  # the minute that set it off moved too far
                halted += 1
                last = d.open[i, 0] if k == 1 else d.close[i, k - 2]
                moved = abs(d.close[i, k - 1] / last - 1) * 100
                from_base = abs(d.close[i, k - 1] / d.base_price[i] - 1) * 100
                assert moved > 3 or from_base > 10, (d.trading_date, d.codes[i], k)
                assert d.vi[i, k : k + 2].all() or k + 1 >= d.close.shape[1] - 1
    assert halted > 0
    _assert_on_grid_and_within_limits(year)
