"""The paper exchange's quotes: the order book's levels on ``md.quote.<code>``, throttled, and in its quote answers."""

from __future__ import annotations

import dataclasses
import datetime as dt

from core.config import PROJECT_ROOT
from core.instruments import load_instruments
from core.matching import MatchingEngine, MatchingParams
from core.messages import Quote, Tick
from core.venue import quote_topic
from services.exchange.clock import kst_ns
from services.exchange.venue import QUOTE_INTERVAL_S, PaperVenue

DAY = dt.date(2026, 3, 3)
CODE = "005930"


def _venue(params: MatchingParams = MatchingParams(), clock_speed: float = 1.0) -> tuple[PaperVenue, MatchingEngine]:
    master = load_instruments(PROJECT_ROOT / "configs" / "instruments.csv")
    engine = MatchingEngine({CODE: master[CODE]}, params=params)
    engine.open_account("firm", 1_000_000_000)
    venue = PaperVenue({CODE: master[CODE]}, engine, seed=8, first_day=DAY, clock_speed=clock_speed)
    venue.begin_day(kst_ns(DAY, "10:00"))
    return venue, engine


def test_quotes_carry_the_books_ten_levels_and_go_out_when_the_touch_changes_at_most_a_few_times_a_second() -> None:
    venue, engine = _venue()
    out = venue.advance(kst_ns(DAY, "10:30"))
    quotes = [(topic, msg) for topic, msg in out if isinstance(msg, Quote)]
    ticks = [msg for _, msg in out if isinstance(msg, Tick)]
    assert quotes and ticks
    assert all(topic == quote_topic(CODE) for topic, _ in quotes)
    for _, q in quotes:
        assert len(q.bid_px) == len(q.ask_px) == 10 and q.bid_px[0] < q.ask_px[0] and q.vi == ""
    # each one differs in its touch from the one before, and they are at least the interval apart
    touches = [(q.bid_px[0], q.ask_px[0]) for _, q in quotes]
    assert all(a != b for a, b in zip(touches, touches[1:]))
    stamps = [q.ts_ns for _, q in quotes]
    assert all(b - a >= QUOTE_INTERVAL_S * 1e9 for a, b in zip(stamps, stamps[1:]))
    # ticks carry the book's touch, on either side of (or at) the print
    assert all(t.bid < t.ask and t.bid <= t.price <= t.ask for t in ticks)
    # the quote answer is the book's touch now
    answer = venue.quote(CODE)
    book = engine.quote(CODE, venue.now_ns)
    assert answer is not None and book is not None
    assert (answer["bid"], answer["ask"]) == (book.bid, book.ask) and answer["bid"] < answer["ask"]


def test_a_faster_clock_spaces_the_quotes_further_apart_in_market_time() -> None:
    venue, _ = _venue(clock_speed=30.0)
    out = venue.advance(kst_ns(DAY, "11:00"))
    stamps = [msg.ts_ns for _, msg in out if isinstance(msg, Quote)]
    assert len(stamps) >= 2
    assert all(b - a >= 30 * QUOTE_INTERVAL_S * 1e9 for a, b in zip(stamps, stamps[1:]))


def test_with_the_book_off_no_quotes_go_out_and_the_touch_is_the_last_print() -> None:
    venue, engine = _venue(dataclasses.replace(MatchingParams(), book=False))
    out = venue.advance(kst_ns(DAY, "10:10"))
    assert not [msg for _, msg in out if isinstance(msg, Quote)]
    answer = venue.quote(CODE)
    assert answer is not None and answer["bid"] == answer["ask"] == engine.last_price(CODE)
