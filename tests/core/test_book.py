"""The simulated order book: spread, depth and refill, queue position, impact, volatility interruptions."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import book as bk
from core.instruments import Instrument
from core.krx import Session, is_on_tick, tick_size
from core.matching import (
    BookQuote,
    Event,
    Execution,
    MatchingEngine,
    MatchingParams,
    OrderUpdate,
)

T0 = 1_767_571_200_000_000_000  # 2026-01-05 00:00 UTC = 09:00 KST, the open
SEC = 1_000_000_000
MIN = 60 * SEC
MIDDAY = T0 + 180 * MIN  # 12:00 KST: no open or close widening to speak of
DAY = dt.date(2026, 1, 5)
SAMSUNG = "005930"  # a KOSPI200 member: dynamic VI at 3 %
KAKAO = "035720"  # not a member here: dynamic VI at 6 %


def _inst(code: str, market: str, last_close: int, kospi200: bool) -> Instrument:
    return Instrument(code, f"name {code}", market, "sector", 1_000_000, 1_000, 10_000, 100, last_close, kospi200)


INSTRUMENTS = {SAMSUNG: _inst(SAMSUNG, "KOSPI", 71_000, True), KAKAO: _inst(KAKAO, "KOSDAQ", 50_000, False)}


def _engine(params: MatchingParams = MatchingParams(), cash: int = 10_000_000_000, held: int = 100_000) -> MatchingEngine:
    engine = MatchingEngine(INSTRUMENTS, params=params)
    engine.open_account("acc", cash, {SAMSUNG: (held, 60_000), KAKAO: (held, 40_000)})
    engine.start_day(DAY, {SAMSUNG: 71_000, KAKAO: 50_000})
    engine.set_session(Session.CONTINUOUS, T0)
    return engine


def _fills(events: Sequence[Event]) -> list[tuple[int, int]]:
    return [(e.qty, e.price) for e in events if isinstance(e, Execution)]


def _order(engine: MatchingEngine, coid: str, side: str, qty: int, price: int, t: int, code: str = SAMSUNG) -> list[Event]:
    return engine.submit("acc", coid, code, side, "limit" if price else "market", qty, price, t)


def _quote(engine: MatchingEngine, t: int, code: str = SAMSUNG) -> BookQuote:
    q = engine.quote(code, t)
    assert q is not None
    return q


def _calm(engine: MatchingEngine, t: int, code: str = SAMSUNG, price: int = 71_000, qty: int = 1_000) -> int:
    """Five minutes of prints at one price, ending at ``t``; returns ``t``."""
    for k in range(30, 0, -1):
        engine.on_trade(code, price, qty, t - k * 10 * SEC)
    engine.on_trade(code, price, qty, t)
    return t


def _spread_ticks(q: BookQuote) -> int:
    n, p = 0, q.bid
    while p < q.ask:
        p += tick_size(p)
        n += 1
    return n


# --- the touch -----------------------------------------------------------------


def test_a_quiet_midday_book_is_one_tick_wide_with_the_last_print_at_the_ask_after_an_uptick() -> None:
    engine = _engine()
    _calm(engine, MIDDAY - MIN, price=70_900)
    engine.on_trade(SAMSUNG, 71_000, 500, MIDDAY)  # an uptick traded at the ask
    q = _quote(engine, MIDDAY)
    assert (q.bid, q.ask) == (70_900, 71_000)
    assert q.bid_px == [70_900 - 100 * k for k in range(10)] and q.ask_px == [71_000 + 100 * k for k in range(10)]
    engine.on_trade(SAMSUNG, 70_900, 500, MIDDAY + SEC)  # a downtick traded at the bid
    q = _quote(engine, MIDDAY + SEC)
    assert (q.bid, q.ask) == (70_900, 71_000)
    engine.on_trade(SAMSUNG, 70_800, 500, MIDDAY + 2 * SEC)
    assert (_quote(engine, MIDDAY + 2 * SEC).bid, _quote(engine, MIDDAY + 2 * SEC).ask) == (70_800, 70_900)


def _touch(engine: MatchingEngine, t: int) -> tuple[int, int]:
    q = _quote(engine, t)
    return q.bid, q.ask


def test_at_a_bars_end_the_touch_follows_the_tick_rule_on_the_bars_whether_the_market_was_fed_the_bar_or_its_prints() -> None:
    bars, prints = _engine(), _engine()  # both: the base price 71,000 is the close before the first bar
    end = MIDDAY + MIN
    # a bar that rose from 71,000 to a close of 71,100, its last print a downtick from 71,200
    bars.on_bar(SAMSUNG, 71_000, 71_200, 71_000, 71_100, 3_000, MIDDAY)
    for k, price in enumerate((71_000, 71_200, 71_100)):
        prints.on_trade(SAMSUNG, price, 1_000, MIDDAY + 20 * k * SEC)
    assert _touch(prints, end) == (71_100, 71_200)  # the prints' tick rule: the last traded at the bid
    prints.close_bar(SAMSUNG, 71_100)
    assert _touch(prints, end) == _touch(bars, end) == (71_000, 71_100)  # the bars': an uptick, at the ask
    # an unchanged close keeps the side of the bar before, however the prints inside ended
    bars.on_bar(SAMSUNG, 71_100, 71_200, 71_100, 71_100, 3_000, end)
    for k, price in enumerate((71_100, 71_200, 71_100)):
        prints.on_trade(SAMSUNG, price, 1_000, end + 20 * k * SEC)
    assert _touch(prints, end + MIN) == (71_100, 71_200)
    prints.close_bar(SAMSUNG, 71_100)
    assert _touch(prints, end + MIN) == _touch(bars, end + MIN) == (71_000, 71_100)
    # the next bar's prints move the side by the tick rule again
    for engine in (bars, prints):
        engine.on_trade(SAMSUNG, 71_000, 1_000, end + MIN)
        assert _touch(engine, end + MIN) == (71_000, 71_100)
        engine.on_trade(SAMSUNG, 71_000, 1_000, end + MIN + SEC)
        engine.on_trade(SAMSUNG, 70_900, 1_000, end + MIN + 2 * SEC)
        assert _touch(engine, end + MIN + 2 * SEC) == (70_900, 71_000)
    # a downtick bar: the bid
    prints.close_bar(SAMSUNG, 71_000)
    assert _touch(prints, end + MIN + 2 * SEC) == (70_900, 71_000)  # 71,000 < 71,100: at the bid, unmoved
    prints.on_trade(SAMSUNG, 71_000, 1_000, end + MIN + 3 * SEC)  # an uptick print: the ask
    assert _touch(prints, end + MIN + 3 * SEC) == (70_900, 71_000)
    prints.close_bar(SAMSUNG, 71_000)  # the bar closed down from 71,100: the bid
    assert _touch(prints, end + MIN + 3 * SEC) == (71_000, 71_100)


def test_the_bars_side_is_saved_with_the_book_and_a_state_saved_without_it_takes_the_last_prints() -> None:
    engine = _engine()
    engine.on_bar(SAMSUNG, 71_000, 71_100, 71_000, 71_100, 3_000, MIDDAY)
    engine.on_trade(SAMSUNG, 71_000, 1_000, MIDDAY + MIN)  # a downtick inside the next bar
    state = engine.to_state()
    assert state["books"][SAMSUNG]["bar_close"] == 71_100 and state["books"][SAMSUNG]["bar_up"] is True
    restored = MatchingEngine.from_state(state, INSTRUMENTS)
    assert restored.to_state() == state
    restored.close_bar(SAMSUNG, 71_000)
    assert _touch(restored, MIDDAY + MIN) == (71_000, 71_100)
    for book in state["books"].values():  # as saved before bar ends were kept
        del book["bar_close"], book["bar_up"]
    old = MatchingEngine.from_state(state, INSTRUMENTS)
    market = old._markets[SAMSUNG]
    assert (market.bar_close, market.bar_up) == (71_000, False)
    assert _touch(old, MIDDAY + MIN) == _touch(engine, MIDDAY + MIN) == (71_000, 71_100)
    old.close_bar(SAMSUNG, 71_000)  # unchanged against the last print standing in: the side it left
    assert _touch(old, MIDDAY + MIN) == (71_000, 71_100) and old._markets[SAMSUNG].bar_up is False


def test_with_the_book_off_a_bars_end_changes_nothing() -> None:
    engine = _engine(MatchingParams(book=False))
    engine.on_trade(SAMSUNG, 71_100, 1_000, MIDDAY)
    engine.on_trade(SAMSUNG, 71_000, 1_000, MIDDAY + SEC)
    before = engine.to_state()
    engine.close_bar(SAMSUNG, 71_000)
    assert engine.to_state() == before and _touch(engine, MIDDAY + SEC) == (71_000, 71_000)


def test_a_marketable_buy_pays_the_ask_and_a_sell_hits_the_bid() -> None:
    engine = _engine()
    _calm(engine, MIDDAY - SEC, price=71_100)
    engine.on_trade(SAMSUNG, 71_000, 1_000, MIDDAY)  # a downtick: bid 71,000, ask 71,100
    assert _fills(_order(engine, "b", "buy", 10, 0, MIDDAY)) == [(10, 71_100)]
    assert _fills(_order(engine, "s", "sell", 10, 0, MIDDAY)) == [(10, 71_000)]
    # a limit buy at the last print is not marketable: it rests at the bid
    assert _fills(_order(engine, "b2", "buy", 10, 71_000, MIDDAY)) == []
    assert [o.client_order_id for o in engine.open_orders("acc")] == ["b2"]


def test_the_spread_widens_with_recent_volatility() -> None:
    calm, wild = _engine(), _engine()
    for k in range(10):
        t = MIDDAY - (10 - k) * MIN
        calm.on_trade(SAMSUNG, 71_000 + 100 * (k % 2), 1_000, t)
        wild.on_trade(SAMSUNG, 71_000 + 800 * (k % 2), 1_000, t)
    assert _spread_ticks(_quote(calm, MIDDAY)) < _spread_ticks(_quote(wild, MIDDAY))
    assert _spread_ticks(_quote(wild, MIDDAY)) >= 5


def test_the_spread_is_wider_near_the_open_and_the_close_than_at_midday() -> None:
    params = dataclasses.replace(MatchingParams(), prior_minute_sd=0.002)  # a livelier stock than the default
    widths = {}
    for name, t in (("open", T0 + MIN), ("midday", MIDDAY), ("close", T0 + 379 * MIN)):
        engine = _engine(params)
        engine.on_trade(SAMSUNG, 71_000, 1_000, t - 2 * SEC)
        engine.on_trade(SAMSUNG, 71_000, 1_000, t - SEC)
        widths[name] = _spread_ticks(_quote(engine, t))
    assert widths["midday"] == 1
    assert widths["open"] > widths["midday"] and widths["close"] > widths["midday"]


@settings(max_examples=60, deadline=None)
@given(
    moves=st.lists(st.tuples(st.integers(-12, 12), st.integers(0, 5_000), st.integers(1, 90)), min_size=1, max_size=60),
    code=st.sampled_from([SAMSUNG, KAKAO]),
)
def test_the_quote_is_on_the_grid_at_least_one_tick_wide_and_within_the_limits(
    moves: list[tuple[int, int, int]], code: str
) -> None:
    engine = _engine()
    lower, upper = engine.price_limits(code) or (0, 0)
    price, t = (71_000 if code == SAMSUNG else 50_000), T0
    for ticks, qty, secs in moves:
        for _ in range(abs(ticks)):
            price = bk.tick_up(price) if ticks > 0 else bk.tick_down(price)
        price = min(max(price, lower), upper)
        t += secs * SEC
        engine.on_trade(code, price, qty, t)
        q = _quote(engine, t, code)
        assert len(q.bid_px) == len(q.ask_px) == 10 or q.bid == lower or q.ask == upper
        assert lower <= q.bid < q.ask <= upper
        assert q.ask - q.bid >= tick_size(q.bid)
        assert all(is_on_tick(p) for p in q.bid_px + q.ask_px)
        assert q.bid_px == sorted(q.bid_px, reverse=True) and q.ask_px == sorted(q.ask_px)


# --- depth and refill ------------------------------------------------------------


def test_a_buy_walks_the_levels_and_the_taken_depth_refills_with_volume_not_at_the_next_print() -> None:
    engine = _engine()
    _calm(engine, MIDDAY)  # recent volume about 8,000 shares: 800 a level; ask 71,100 after ... a flat tape
    q = _quote(engine, MIDDAY)
    depth, ask = q.ask_qty[0], q.ask
    assert q.ask_qty == [depth] * 10
    fills = _fills(_order(engine, "b1", "buy", depth + 50, 0, MIDDAY))
    assert fills == [(depth, ask), (50, ask + 100)]
    # the next print does not restore the level at once ...
    engine.on_trade(SAMSUNG, 71_000, 10, MIDDAY + 1)
    assert _quote(engine, MIDDAY + 1).ask_qty[0] < depth
    # ... the market's volume rate does: a few seconds of it bring the shares back
    later = _quote(engine, MIDDAY + 30 * SEC)
    assert later.ask_qty[0] == later.ask_qty[1]


def test_depth_shown_follows_recent_volume() -> None:
    thin, thick = _engine(), _engine()
    _calm(thin, MIDDAY, qty=200)
    _calm(thick, MIDDAY, qty=5_000)
    assert _quote(thick, MIDDAY).bid_qty[0] > 10 * _quote(thin, MIDDAY).bid_qty[0] / 2
    assert _quote(thin, MIDDAY).bid_qty[0] >= MatchingParams().min_depth_shares


# --- queue position ----------------------------------------------------------------


def test_a_resting_buy_at_the_bid_waits_for_the_shares_shown_ahead_of_it() -> None:
    engine = _engine()
    _calm(engine, MIDDAY - SEC, price=71_100)
    engine.on_trade(SAMSUNG, 71_000, 1_000, MIDDAY)  # bid 71,000
    shown = _quote(engine, MIDDAY).bid_qty[0]
    _order(engine, "b1", "buy", 100, 71_000, MIDDAY)
    order = engine.order_by_client_id("b1")
    assert order is not None and order.queue_ahead == shown
    t = MIDDAY
    worked = 0
    while worked + 400 <= shown:
        t += SEC
        assert _fills(engine.on_trade(SAMSUNG, 71_000, 400, t)) == []
        worked += 400
    t += SEC
    got = _fills(engine.on_trade(SAMSUNG, 71_000, 400, t))
    assert got == [(min(100, worked + 400 - shown, 80), 71_000)]  # past the queue, within participation


def test_a_buy_that_betters_the_bid_inside_a_wide_spread_stands_first() -> None:
    engine = _engine()
    engine.on_trade(SAMSUNG, 71_000, 1_000, T0 + SEC)
    engine.on_trade(SAMSUNG, 70_900, 1_000, T0 + 2 * SEC)  # at the open: a spread of several ticks
    q = _quote(engine, T0 + 2 * SEC)
    assert _spread_ticks(q) >= 2
    inside = q.bid + 100
    _order(engine, "b1", "buy", 50, inside, T0 + 2 * SEC)
    order = engine.order_by_client_id("b1")
    assert order is not None and order.queue_ahead == 0 and order.is_open
    assert _fills(engine.on_trade(SAMSUNG, inside, 500, T0 + 3 * SEC)) == [(50, inside)]


def test_an_order_that_arrived_at_a_bars_open_meets_only_what_the_bar_shows_traded_after_that_print() -> None:
    engine = _engine()
    engine.on_bar(SAMSUNG, 71_100, 71_100, 71_100, 71_100, 10_000, MIDDAY - 2 * MIN)
    engine.on_bar(SAMSUNG, 71_100, 71_100, 71_000, 71_000, 10_000, MIDDAY - MIN)  # a down bar: bid 71,000

    def by_order(events: Sequence[Event]) -> list[tuple[str, int, int]]:
        return [(e.client_order_id, e.qty, e.price) for e in events if isinstance(e, Execution)]

    def bar_open(coid: str, o: int, h: int, low: int, c: int, t: int) -> list[tuple[str, int, int]]:
        engine.on_trade(SAMSUNG, o, 0, t)  # the bar's open print, then an order, then the rest of the bar
        assert _fills(_order(engine, coid, "buy", 10, 71_000, t)) == []
        return by_order(engine.on_bar(SAMSUNG, o, h, low, c, 20_000, t))

    assert _fills(_order(engine, "before", "buy", 10, 71_000, MIDDAY - MIN)) == []
    # a bar of one price: the order that was there works off its queue; the one after the open print meets nothing
    assert bar_open("one", 71_000, 71_000, 71_000, 71_000, MIDDAY) == [("before", 10, 71_000)]
    one = engine.order_by_client_id("one")
    assert one is not None and one.is_open and one.queue_ahead > 0
    # its low is its open and it closed higher: nothing after the open is shown at 71,000
    assert bar_open("low_open", 71_000, 71_100, 71_000, 71_100, MIDDAY + MIN) == [("one", 10, 71_000)]
    low_open = engine.order_by_client_id("low_open")
    assert low_open is not None and low_open.is_open
    # its low is below its open: traded after it, so it works off the queue of both
    assert bar_open("low_after", 71_100, 71_100, 71_000, 71_000, MIDDAY + 2 * MIN) == [
        ("low_open", 10, 71_000), ("low_after", 10, 71_000)]


def test_a_bar_that_reaches_a_resting_limit_exactly_works_off_its_queue() -> None:
    engine = _engine()
    _calm(engine, MIDDAY - SEC, price=71_100)
    engine.on_trade(SAMSUNG, 71_000, 1_000, MIDDAY)
    _order(engine, "b1", "buy", 100, 71_000, MIDDAY)
    order = engine.order_by_client_id("b1")
    assert order is not None
    ahead = order.queue_ahead
    # low 71,000, high 71,400: five ticks, so a fifth of 2,000 shares traded at 71,000
    engine.on_bar(SAMSUNG, 71_200, 71_400, 71_000, 71_300, 2_000, MIDDAY + MIN)
    assert order.queue_ahead == max(ahead - 400, 0)
    off = _engine(MatchingParams(book=False))
    off.on_trade(SAMSUNG, 71_000, 1_000, MIDDAY)
    _order(off, "b1", "buy", 100, 70_900, MIDDAY)
    before = off.order_by_client_id("b1")
    assert before is not None
    queue = before.queue_ahead
    off.on_bar(SAMSUNG, 71_200, 71_400, 70_900, 71_300, 2_000, MIDDAY + MIN)
    assert before.queue_ahead == queue  # book off, a bare touch works off nothing


# --- impact ------------------------------------------------------------------------


def _lively(engine: MatchingEngine, t: int) -> None:
    """Ten minutes of a lively tape ending at ``t`` on 71,000 (a downtick): 71,000 and 71,300 by turns."""
    for k in range(10):
        engine.on_trade(SAMSUNG, 71_000 + 300 * (k % 2), 3_000, t - (10 - k) * MIN)
    engine.on_trade(SAMSUNG, 71_000, 3_000, t)


def test_our_marketable_buy_lifts_the_mid_by_the_square_root_law_and_it_decays_back() -> None:
    params = MatchingParams()
    moves = []
    for multiple in (1, 4):
        engine = _engine(params)
        _lively(engine, MIDDAY)
        market = engine._markets[SAMSUNG]
        volume, sd = bk.recent_volume(market, MIDDAY, params), bk.minute_sd(market, params)
        assert _quote(engine, MIDDAY).bid == 71_000  # after a downtick
        qty = multiple * 800
        _order(engine, "b1", "buy", qty, 0, MIDDAY)
        assert market.impact_won == pytest.approx(params.impact_k * sd * 71_000 * (qty / volume) ** 0.5)
        moves.append(market.impact_won)
        assert _quote(engine, MIDDAY + 1).bid >= 71_000 + 100 * int(market.impact_won / 100 + 0.5)
        # it decays with its half-life and some minutes later moves no price
        assert bk.impact_now(market, MIDDAY + params.impact_half_life_ns, params) == pytest.approx(moves[-1] / 2)
        assert bk.impact_moves(market)
        later = _quote(engine, MIDDAY + 8 * MIN)
        assert not bk.impact_moves(market) and later.bid == 71_000
    assert moves[1] == pytest.approx(2 * moves[0])  # four times the size, twice the move


def test_small_moves_too_small_to_move_a_price_add_up() -> None:
    params = MatchingParams()
    engine = _engine(params)
    _lively(engine, MIDDAY)
    market = engine._markets[SAMSUNG]
    _order(engine, "b0", "buy", 10, 0, MIDDAY)
    one = market.impact_won
    assert 0 < one * 2 < 100 and not bk.impact_moves(market)
    for k in range(1, 30):
        _order(engine, f"b{k}", "buy", 10, 0, MIDDAY + k)
    assert market.impact_won == pytest.approx(30 * one, rel=1e-3) and bk.impact_moves(market)


def test_impact_moves_the_prints_our_resting_orders_meet() -> None:
    params = MatchingParams()
    engine = _engine(params)
    _lively(engine, MIDDAY)
    _order(engine, "b1", "buy", 6_000, 0, MIDDAY)  # walks several levels and lifts the market
    market = engine._markets[SAMSUNG]
    assert market.impact_won >= 250
    seen = bk.shifted(market, 71_200, MIDDAY + 1, params)
    limit = seen - 100
    # a sell resting above the bid fills when the tape prints 71,200, below it but above in our market
    _order(engine, "s1", "sell", 50, limit, MIDDAY + 1)
    assert limit > 71_200 and _fills(engine.on_trade(SAMSUNG, 71_200, 1_000, MIDDAY + 2)) == [(50, limit)]


# --- volatility interruptions ---------------------------------------------------------


def test_a_print_past_the_dynamic_threshold_starts_a_two_minute_auction_that_crosses_at_its_last_price() -> None:
    engine = _engine()
    _calm(engine, MIDDAY)
    _order(engine, "s1", "sell", 100, 73_000, MIDDAY)  # rests above the market
    # 3.2 % above the last trade: a KOSPI200 member stops here
    assert _fills(engine.on_trade(SAMSUNG, 73_300, 1_000, MIDDAY + SEC)) == []
    q = _quote(engine, MIDDAY + SEC)
    assert (q.vi, q.vi_until_ns) == ("dynamic", MIDDAY + SEC + 2 * MIN)
    # during the VI nothing fills continuously, not even a marketable order: it rests
    assert _fills(_order(engine, "b1", "buy", 10, 0, MIDDAY + 2 * SEC)) == []
    assert _fills(engine.on_trade(SAMSUNG, 73_500, 2_000, MIDDAY + MIN)) == []
    assert _fills(engine.on_trade(SAMSUNG, 73_400, 2_000, MIDDAY + 90 * SEC)) == []
    # the first print after two minutes crosses everything at the last price seen
    got = engine.on_trade(SAMSUNG, 73_400, 500, MIDDAY + SEC + 2 * MIN)
    assert sorted(_fills(got)) == [(10, 73_400), (100, 73_400)]
    assert _quote(engine, MIDDAY + 3 * MIN).vi == ""


def test_the_dynamic_threshold_is_three_percent_for_kospi200_members_and_six_for_the_rest() -> None:
    engine = _engine()
    _calm(engine, MIDDAY)
    _calm(engine, MIDDAY, code=KAKAO, price=50_000)
    engine.on_trade(SAMSUNG, 73_500, 100, MIDDAY + SEC)  # +3.5 %
    engine.on_trade(KAKAO, 51_800, 100, MIDDAY + SEC)  # +3.6 %
    assert (_quote(engine, MIDDAY + SEC).vi, _quote(engine, MIDDAY + SEC, KAKAO).vi) == ("dynamic", "")
    engine.on_trade(KAKAO, 55_000, 100, MIDDAY + 2 * SEC)  # +6.2 %
    assert _quote(engine, MIDDAY + 2 * SEC, KAKAO).vi == "dynamic"


def test_a_static_vi_starts_ten_percent_from_the_last_single_price() -> None:
    engine = _engine()
    engine.on_trade(KAKAO, 50_000, 1_000, MIDDAY)
    t = MIDDAY
    for price in (52_500, 54_600):  # steps under 6 % each, but 54,600 is 9.2 % over the base
        t += SEC
        engine.on_trade(KAKAO, price, 1_000, t)
    assert _quote(engine, t, KAKAO).vi == ""
    engine.on_trade(KAKAO, 55_100, 1_000, t + SEC)  # 10.2 % over the base, 0.9 % over the last
    assert _quote(engine, t + SEC, KAKAO).vi == "static"
    # the VI's price becomes the new single price: 10 % from there is the next threshold
    engine.on_trade(KAKAO, 55_100, 1_000, t + SEC + 2 * MIN)
    engine.on_trade(KAKAO, 57_800, 1_000, t + 2 * SEC + 2 * MIN)
    assert _quote(engine, t + 2 * SEC + 2 * MIN, KAKAO).vi == ""


def test_our_order_walking_past_the_threshold_stops_there_and_starts_a_vi() -> None:
    engine = _engine()
    _calm(engine, MIDDAY, qty=100)  # a thin book: 100 shares a level
    events = _order(engine, "b1", "buy", 10_000, 0, MIDDAY)
    prices = [p for _, p in _fills(events)]
    assert prices and max(prices) * 100 <= 71_000 * 103
    assert _quote(engine, MIDDAY).vi == "dynamic"
    order = engine.order_by_client_id("b1")
    assert order is not None and order.is_open and order.remaining_qty > 0


def test_a_bar_past_the_threshold_fills_resting_orders_only_up_to_it() -> None:
    engine = _engine()
    _calm(engine, MIDDAY, code=KAKAO, price=50_000)
    _order(engine, "s1", "sell", 10, 52_500, MIDDAY, code=KAKAO)  # 5 % up: within the band
    _order(engine, "s2", "sell", 10, 54_000, MIDDAY, code=KAKAO)  # 8 % up: past it
    got = engine.on_bar(KAKAO, 50_000, 54_500, 50_000, 54_000, 10_000, MIDDAY + MIN)
    assert _fills(got) == [(10, 52_500)]
    assert _quote(engine, MIDDAY + MIN, KAKAO).vi == "dynamic"


def test_the_closing_auction_supersedes_a_vi() -> None:
    engine = _engine()
    _calm(engine, MIDDAY)
    engine.on_trade(SAMSUNG, 73_500, 100, MIDDAY + SEC)
    engine.set_session(Session.CLOSING_AUCTION, MIDDAY + 30 * SEC)
    assert _quote(engine, MIDDAY + 30 * SEC).vi == ""


# --- the book off ------------------------------------------------------------------


def test_with_the_book_off_the_touch_is_the_last_print_and_nothing_moves_it() -> None:
    engine = _engine(MatchingParams(book=False))
    engine.on_trade(SAMSUNG, 71_000, 5_000, MIDDAY)
    q = _quote(engine, MIDDAY)
    assert (q.bid, q.ask, q.bid_qty[0], q.ask_qty[0]) == (71_000, 71_000, 500, 500)
    assert _fills(_order(engine, "b1", "buy", 600, 0, MIDDAY)) == [(500, 71_000), (100, 71_100)]
    assert _fills(_order(engine, "s1", "sell", 10, 0, MIDDAY)) == [(10, 71_000)]
    engine.on_trade(SAMSUNG, 75_000, 100, MIDDAY + SEC)  # 5.6 %: no VI with the book off
    assert _quote(engine, MIDDAY + SEC).vi == ""
    assert _fills(_order(engine, "b2", "buy", 10, 0, MIDDAY + SEC)) == [(10, 75_000)]


def test_with_the_book_off_taken_depth_comes_back_at_the_next_print() -> None:
    engine = _engine(MatchingParams(book=False))
    engine.on_trade(SAMSUNG, 71_000, 5_000, MIDDAY)
    assert _fills(_order(engine, "b1", "buy", 500, 0, MIDDAY)) == [(500, 71_000)]
    assert _fills(_order(engine, "b2", "buy", 10, 0, MIDDAY)) == [(10, 71_100)]
    engine.on_trade(SAMSUNG, 71_000, 1, MIDDAY + 1)
    assert _fills(_order(engine, "b3", "buy", 10, 0, MIDDAY + 1)) == [(10, 71_000)]
    assert engine._markets[SAMSUNG].impact_won == 0.0


# --- quotes for the simulator's bars ---------------------------------------------------


def test_bar_quotes_follow_the_engine_rule_for_spread_side_and_time_of_day() -> None:
    params = MatchingParams()
    close = np.array([[71_000, 71_100, 71_100, 71_000, 70_900]], dtype=np.int64)
    sd = np.full(close.shape, 0.001)
    m_open = np.array([1.0, 2.0, 180.0, 181.0, 182.0])
    m_close = 380.0 - m_open
    bid, ask = bk.bar_quotes(close, sd, m_open, m_close, prev_close=np.array([70_900]), params=params)
    for k in range(close.shape[1]):
        tod = bk.time_of_day_factor(m_open[k], m_close[k], params)
        n = bk.spread_ticks(int(close[0, k]), 0.001, tod, params)
        assert (ask[0, k] - bid[0, k]) // 100 == n
    # ticks: up, up, unchanged (keeps up), down, down
    assert list(ask[0, :3]) == [71_000, 71_100, 71_100]
    assert list(bid[0, 3:]) == [71_000, 70_900]
    assert list(ask[0, 3:] - bid[0, 3:]) == [100, 100]
    assert ask[0, 0] - bid[0, 0] == 200  # the open's wider spread


@settings(max_examples=50, deadline=None)
@given(
    closes=st.lists(st.integers(900, 600_000), min_size=2, max_size=30),
    sd=st.floats(0.0, 0.05),
)
def test_bar_quotes_are_on_the_grid_ordered_and_within_the_limits(closes: list[int], sd: float) -> None:
    from core.krx import limit_prices, round_to_tick

    grid = [round_to_tick(c) for c in closes]
    base = grid[0]
    lower, upper = limit_prices(base)
    c = np.clip(np.array([grid], dtype=np.int64), lower, upper)
    m_open = np.arange(1, c.shape[1] + 1, dtype=np.float64)
    bid, ask = bk.bar_quotes(c, np.full(c.shape, sd), m_open, 380 - m_open, prev_close=np.array([base]),
                             lower=np.array([lower]), upper=np.array([upper]))
    assert (bid < ask).all() and (bid >= lower).all() and (ask <= upper).all()
    assert all(is_on_tick(int(p)) for p in np.concatenate([bid[0], ask[0]]))
    assert ((bid == c) | (ask == c) | (bid == lower) | (ask == upper)).all()


def test_order_updates_during_a_vi_say_the_order_rests() -> None:
    engine = _engine()
    _calm(engine, MIDDAY)
    engine.on_trade(SAMSUNG, 73_500, 100, MIDDAY + SEC)
    events = _order(engine, "b1", "buy", 10, 74_000, MIDDAY + 2 * SEC)
    updates = [e for e in events if isinstance(e, OrderUpdate)]
    assert [u.status for u in updates] == ["accepted"] and _fills(events) == []


@settings(max_examples=40, deadline=None)
@given(
    flow=st.lists(st.tuples(st.sampled_from(["bar", "bar", "bar", "buy", "sell", "trade"]), st.integers(-40, 40),
                            st.integers(0, 6), st.integers(1, 3_000)), min_size=5, max_size=80),
)
def test_the_quiet_bar_shortcut_gives_exactly_what_the_full_path_gives(flow: list[tuple[str, int, int, int]]) -> None:
    fast, full = _engine(), _engine()
    t, price = MIDDAY, 71_000
    for n, (kind, move, width, qty) in enumerate(flow):
        t += MIN
        price = min(max(price + 100 * move, 50_000), 92_000)
        for engine in (fast, full):
            if engine is full:
                for market in engine._markets.values():
                    market.quiet_hi = 0  # never quiet: every bar takes the full path
            if kind == "bar":
                got = engine.on_bar(SAMSUNG, price, price + 100 * width, price - 100 * width, price, qty, t)
            elif kind == "trade":
                got = engine.on_trade(SAMSUNG, price, qty, t)
            else:
                got = _order(engine, f"o{n}", kind, qty // 10 + 1, 0 if width < 2 else price, t)
            if engine is fast:
                fast_events = got
        assert _fills(fast_events) == _fills(got)
        assert _quote(fast, t) == _quote(full, t)
    assert fast.to_state() == full.to_state()
