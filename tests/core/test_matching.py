"""The paper venue's matching engine: fills, depth, priority, auctions, refusals, books, state.

Exact prices here are those of the engine with the order book off (the touch at
the last print on both sides); ``tests/core/test_book.py`` pins the book. The
bookkeeping invariants and the state round trip run with the book on and off.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.costs import CostModel
from core.instruments import Instrument
from core.krx import Session
from core.matching import (
    CancelRefused,
    Event,
    Execution,
    MatchingEngine,
    MatchingParams,
    OrderUpdate,
)
from core.messages import OrderStatus

T0 = 1_767_571_200_000_000_000  # 2026-01-05 00:00 UTC
SEC = 1_000_000_000
DAY_2026 = dt.date(2026, 1, 5)
SAMSUNG = "005930"
KAKAO = "035720"  # KOSDAQ here, at 50,000 won: right on a tick-size boundary


def _inst(code: str, market: str, last_close: int) -> Instrument:
    return Instrument(code, f"name {code}", market, "sector", 1_000_000, 1_000, 10_000, 100, last_close)


INSTRUMENTS = {SAMSUNG: _inst(SAMSUNG, "KOSPI", 71_000), KAKAO: _inst(KAKAO, "KOSDAQ", 50_000)}
BOOK_OFF = MatchingParams(book=False)
BOOK_ON = MatchingParams()


def _engine(
    cash: int = 100_000_000,
    holdings: dict[str, tuple[int, int]] | None = None,
    session: Session = Session.CONTINUOUS,
    day: dt.date = DAY_2026,
    params: MatchingParams = BOOK_OFF,
) -> MatchingEngine:
    engine = MatchingEngine(INSTRUMENTS, params=params)
    engine.open_account("acc", cash, holdings or {})
    engine.start_day(day, {SAMSUNG: 71_000, KAKAO: 50_000})
    engine.set_session(session, T0)
    return engine


def _fills(events: Sequence[Event]) -> list[tuple[int, int]]:
    """(qty, price) of each execution among events."""
    return [(e.qty, e.price) for e in events if isinstance(e, Execution)]


def _last_update(events: Sequence[Event]) -> OrderUpdate:
    return [e for e in events if isinstance(e, OrderUpdate)][-1]


def _fee(notional: int) -> int:
    """The paper commission (0.0142 %), rounded half up."""
    return (notional * 142 * 2 + 1_000_000) // 2_000_000


def _buy(engine: MatchingEngine, coid: str, qty: int, price: int, t: int = T0, code: str = SAMSUNG) -> list[Event]:
    return engine.submit("acc", coid, code, "buy", "limit" if price else "market", qty, price, t)


def _sell(engine: MatchingEngine, coid: str, qty: int, price: int, t: int = T0, code: str = SAMSUNG) -> list[Event]:
    return engine.submit("acc", coid, code, "sell", "limit" if price else "market", qty, price, t)


# --- cash and positions ------------------------------------------------------


def test_buy_at_the_touch_books_cash_and_position_to_the_won() -> None:
    engine = _engine(cash=10_000_000)
    events = _buy(engine, "b1", 10, 71_000)
    assert _fills(events) == [(10, 71_000)]
    assert _fee(710_000) == 101
    acct = engine.account("acc")
    assert acct is not None
    assert acct.cash_won == 10_000_000 - 710_000 - 101
    assert acct.fees_won == 101 and acct.taxes_won == 0 and acct.cash_on_hold_won == 0
    pos = engine.positions("acc")[SAMSUNG]
    assert (pos.qty, pos.avg_price, pos.book_cost_won, pos.sellable_qty) == (10, 71_000, 710_000, 10)


@pytest.mark.parametrize(
    ("day", "code", "price", "tax"),
    [
        (dt.date(2026, 1, 5), SAMSUNG, 71_000, 1_420),  # 0.20 %
        (dt.date(2025, 6, 2), SAMSUNG, 71_000, 1_065),  # 0.15 %
        (dt.date(2024, 6, 3), SAMSUNG, 71_000, 1_278),  # 0.18 %
        (dt.date(2025, 6, 2), KAKAO, 50_000, 750),
    ],
)
def test_sell_pays_commission_and_the_tax_of_its_trading_date(day: dt.date, code: str, price: int, tax: int) -> None:
    engine = _engine(cash=0, holdings={code: (10, 60_000)}, day=day)
    events = _sell(engine, "s1", 10, price, code=code)
    execution = next(e for e in events if isinstance(e, Execution))
    notional = 10 * price
    assert (execution.fee_won, execution.tax_won) == (_fee(notional), tax)
    acct = engine.account("acc")
    assert acct is not None
    assert acct.cash_won == notional - _fee(notional) - tax
    assert acct.realized_pnl_won == notional - 600_000
    assert (acct.fees_won, acct.taxes_won) == (_fee(notional), tax)
    assert engine.positions("acc") == {}


def test_round_trip_keeps_average_price_and_realised_pnl_exact() -> None:
    engine = _engine(cash=10_000_000)
    _buy(engine, "b1", 3, 71_000)
    engine.on_trade(SAMSUNG, 71_100, 10, T0 + SEC)
    _buy(engine, "b2", 4, 71_100, T0 + 2 * SEC)
    pos = engine.positions("acc")[SAMSUNG]
    assert pos.book_cost_won == 3 * 71_000 + 4 * 71_100
    assert pos.avg_price == 71_057  # 497,400 / 7 = 71,057.14
    engine.on_trade(SAMSUNG, 72_000, 10, T0 + 3 * SEC)
    _sell(engine, "s1", 2, 72_000, T0 + 4 * SEC)
    acct = engine.account("acc")
    assert acct is not None
    cost_out = 497_400 * 2 // 7
    assert acct.realized_pnl_won == 144_000 - cost_out
    fees = _fee(213_000) + _fee(284_400) + _fee(144_000)
    tax = 144_000 * 2_000 // 1_000_000
    assert acct.cash_won == 10_000_000 - 213_000 - 284_400 + 144_000 - fees - tax
    assert engine.positions("acc")[SAMSUNG].book_cost_won == 497_400 - cost_out


def test_opening_holdings_are_sellable_and_valued_at_the_last_price() -> None:
    engine = _engine(cash=0, holdings={SAMSUNG: (50, 65_000)})
    engine.on_trade(SAMSUNG, 72_000, 100, T0)
    pos = engine.positions("acc")[SAMSUNG]
    assert (pos.qty, pos.avg_price, pos.market_value_won) == (50, 65_000, 3_600_000)
    acct = engine.account("acc")
    assert acct is not None and acct.equity_won == 3_600_000


# --- buying power and sellable quantity --------------------------------------


def test_limit_buy_holds_price_and_commission_rounded_up_per_share() -> None:
    engine = _engine(cash=1_000_000)
    _buy(engine, "b1", 10, 70_000)  # below the last price: rests
    hold = 10 * (70_000 + 10)  # 70,000 x 0.0142 % = 9.94 won, rounded up
    acct = engine.account("acc")
    assert acct is not None
    assert (acct.cash_won, acct.cash_on_hold_won, acct.buying_power_won) == (1_000_000, hold, 1_000_000 - hold)


def test_market_buy_holds_the_upper_limit_price() -> None:
    engine = _engine(cash=10_000_000, session=Session.PRE_OPEN)
    assert engine.price_limits(SAMSUNG) == (49_700, 92_300)
    engine.submit("acc", "m1", SAMSUNG, "buy", "market", 10, 0, T0)
    acct = engine.account("acc")
    assert acct is not None
    assert acct.cash_on_hold_won == 10 * (92_300 + 14)  # 13.1 won commission rounded up


def test_buying_power_is_exact_to_the_won() -> None:
    hold = 10 * (70_000 + 10)
    engine = _engine(cash=2 * hold - 1)
    assert _last_update(_buy(engine, "b1", 10, 70_000)).status is OrderStatus.ACCEPTED
    refused = _last_update(_buy(engine, "b2", 10, 70_000))
    assert (refused.status, refused.reason_code) == (OrderStatus.REJECTED, "INSUFFICIENT_CASH")
    engine.cancel("b1", 0, T0 + 1)
    assert _last_update(_buy(engine, "b3", 10, 70_000)).status is OrderStatus.ACCEPTED


def test_partial_fill_releases_the_hold_of_the_filled_shares() -> None:
    engine = _engine(cash=10_000_000)
    _buy(engine, "b1", 100, 70_000)
    engine.on_trade(SAMSUNG, 69_900, 200, T0 + SEC)  # 20 % of 200 = 40 shares
    acct = engine.account("acc")
    assert acct is not None
    assert acct.cash_on_hold_won == 60 * 70_010
    assert acct.cash_won == 10_000_000 - 40 * 70_000 - _fee(40 * 70_000)


def test_shares_in_open_sells_are_not_sellable_twice() -> None:
    engine = _engine(holdings={SAMSUNG: (10, 60_000)})
    _sell(engine, "s1", 6, 75_000)
    assert engine.positions("acc")[SAMSUNG].sellable_qty == 4
    refused = _last_update(_sell(engine, "s2", 5, 75_000))
    assert refused.reason_code == "INSUFFICIENT_SHARES"
    assert _last_update(_sell(engine, "s3", 4, 75_000)).status is OrderStatus.ACCEPTED


# --- taking liquidity: the depth model ---------------------------------------


def test_market_buy_walks_up_the_levels_when_it_exceeds_the_depth() -> None:
    engine = _engine()  # no volume yet: the minimum depth of 100 shares a level
    events = engine.submit("acc", "m1", SAMSUNG, "buy", "market", 250, 0, T0)
    assert _fills(events) == [(100, 71_000), (100, 71_100), (50, 71_200)]
    assert _last_update(events).avg_fill_price == (7_100_000 + 7_110_000 + 3_560_000) // 250


def test_a_second_order_in_the_same_instant_continues_where_the_first_stopped() -> None:
    engine = _engine()
    _buy(engine, "b1", 150, 71_200)
    assert _fills(_buy(engine, "b2", 100, 71_200)) == [(50, 71_100), (50, 71_200)]
    engine.on_trade(SAMSUNG, 71_000, 10, T0 + SEC)  # a new print refreshes the touch
    assert _fills(_buy(engine, "b3", 10, 71_000, T0 + SEC)) == [(10, 71_000)]


def test_depth_follows_recent_volume() -> None:
    engine = _engine()
    engine.on_trade(SAMSUNG, 71_000, 5_000, T0)  # depth = 10 % of 5,000
    assert _fills(_buy(engine, "b1", 600, 72_000, T0)) == [(500, 71_000), (100, 71_100)]


def test_depth_decays_as_the_recent_volume_ages() -> None:
    engine = _engine()
    engine.on_trade(SAMSUNG, 71_000, 8_000, T0)
    # one half-life later the recent volume counts half: 400 shares a level
    assert _fills(_buy(engine, "b1", 500, 72_000, T0 + 60 * SEC)) == [(400, 71_000), (100, 71_100)]


def test_sell_walks_down_across_a_tick_size_boundary() -> None:
    engine = _engine(holdings={KAKAO: (300, 40_000)})
    events = engine.submit("acc", "s1", KAKAO, "sell", "market", 250, 0, T0)
    assert _fills(events) == [(100, 50_000), (100, 49_950), (50, 49_900)]


def test_market_order_walks_to_the_daily_limit_and_rests_what_the_depth_cannot_fill() -> None:
    engine = _engine(cash=3_000_000_000)
    events = engine.submit("acc", "m1", SAMSUNG, "buy", "market", 30_000, 0, T0)
    fills = _fills(events)
    assert fills[0] == (100, 71_000) and fills[-1] == (100, 92_300)
    assert sum(q for q, _ in fills) == 100 * len(range(71_000, 92_301, 100))  # 214 levels of 100
    assert _last_update(events).remaining_qty == 30_000 - 21_400
    # the rest fills against later prints at their price, within the participation cap
    assert _fills(engine.on_trade(SAMSUNG, 91_000, 1_000, T0 + SEC)) == [(200, 91_000)]


def test_marketable_limit_stops_at_its_price_and_rests_the_rest() -> None:
    engine = _engine()
    events = _buy(engine, "b1", 250, 71_100)
    assert _fills(events) == [(100, 71_000), (100, 71_100)]
    order = engine.order_by_client_id("b1")
    assert order is not None
    assert (order.status, order.filled_qty, order.remaining_qty) == (OrderStatus.PARTIALLY_FILLED, 200, 50)
    assert engine.open_orders("acc") == [order]


# --- resting orders ----------------------------------------------------------


def test_resting_buy_fills_at_its_limit_when_the_market_trades_through() -> None:
    engine = _engine()
    assert _fills(_buy(engine, "b1", 30, 70_000)) == []
    assert _fills(engine.on_trade(SAMSUNG, 70_500, 1_000, T0 + SEC)) == []
    events = engine.on_trade(SAMSUNG, 69_900, 1_000, T0 + 2 * SEC)
    assert _fills(events) == [(30, 70_000)]
    assert _last_update(events).status is OrderStatus.FILLED
    assert engine.open_orders() == []


def test_resting_sell_fills_when_the_market_trades_through_above() -> None:
    engine = _engine(holdings={SAMSUNG: (10, 60_000)})
    _sell(engine, "s1", 10, 72_000)
    assert _fills(engine.on_trade(SAMSUNG, 72_100, 100, T0 + SEC)) == [(10, 72_000)]


def test_partial_fills_are_capped_by_participation_in_the_traded_volume() -> None:
    engine = _engine()
    _buy(engine, "b1", 300, 70_000)
    first = engine.on_trade(SAMSUNG, 69_900, 1_000, T0 + SEC)
    assert _fills(first) == [(200, 70_000)]
    assert _last_update(first).status is OrderStatus.PARTIALLY_FILLED
    assert _fills(engine.on_trade(SAMSUNG, 69_800, 4, T0 + 2 * SEC)) == []  # 20 % of 4 rounds to 0
    assert _fills(engine.on_trade(SAMSUNG, 69_800, 1_000, T0 + 3 * SEC)) == [(100, 70_000)]
    order = engine.order_by_client_id("b1")
    assert order is not None and order.status is OrderStatus.FILLED and order.filled_qty == 300


def test_a_print_at_the_limit_first_works_off_the_queue_ahead() -> None:
    engine = _engine()
    _buy(engine, "b1", 50, 70_000)  # joins behind one level's depth: 100 shares
    assert _fills(engine.on_trade(SAMSUNG, 70_000, 60, T0 + SEC)) == []
    assert _fills(engine.on_trade(SAMSUNG, 70_000, 50, T0 + 2 * SEC)) == [(10, 70_000)]  # 40 queue, cap 10
    assert _fills(engine.on_trade(SAMSUNG, 70_000, 1_000, T0 + 3 * SEC)) == [(40, 70_000)]


def test_own_resting_orders_fill_in_price_time_priority() -> None:
    engine = _engine()
    _buy(engine, "early", 60, 70_000, T0)
    _buy(engine, "late", 60, 70_000, T0 + 1)
    _buy(engine, "better", 60, 70_100, T0 + 2)
    events = engine.on_trade(SAMSUNG, 69_900, 500, T0 + SEC)  # cap 100
    fills = [(e.client_order_id, e.qty, e.price) for e in events if isinstance(e, Execution)]
    assert fills == [("better", 60, 70_100), ("early", 40, 70_000)]


def test_a_partial_cancel_keeps_the_place_in_the_queue() -> None:
    engine = _engine()
    _buy(engine, "early", 60, 70_000, T0)
    _buy(engine, "late", 60, 70_000, T0 + 1)
    engine.cancel("early", 20, T0 + 2)
    events = engine.on_trade(SAMSUNG, 69_900, 250, T0 + SEC)  # cap 50
    assert [(e.client_order_id, e.qty) for e in events if isinstance(e, Execution)] == [("early", 40), ("late", 10)]


def test_bar_fills_resting_limits_its_range_trades_through() -> None:
    engine = _engine(holdings={SAMSUNG: (100, 60_000)})
    _buy(engine, "b1", 100, 70_000)
    _sell(engine, "s1", 100, 72_000)
    events = engine.on_bar(SAMSUNG, 71_000, 72_100, 69_900, 71_500, 300, T0 + 60 * SEC)
    fills = [(e.client_order_id, e.qty, e.price) for e in events if isinstance(e, Execution)]
    assert fills == [("b1", 60, 70_000), ("s1", 60, 72_000)]
    assert engine.last_price(SAMSUNG) == 71_500


def test_bar_that_only_touches_the_limit_fills_nothing() -> None:
    engine = _engine()
    _buy(engine, "b1", 10, 70_000)
    assert _fills(engine.on_bar(SAMSUNG, 71_000, 71_500, 70_000, 71_000, 10_000, T0 + 60 * SEC)) == []


def test_prints_outside_the_daily_limits_are_ignored() -> None:
    engine = _engine()
    _buy(engine, "b1", 10, 70_000)
    assert engine.on_trade(SAMSUNG, 40_000, 1_000, T0 + SEC) == []
    assert engine.on_bar(SAMSUNG, 71_000, 99_000, 69_000, 71_000, 1_000, T0 + SEC) == []
    assert engine.on_trade("999990", 40_000, 1_000, T0 + SEC) == []
    assert engine.last_price(SAMSUNG) == 71_000


def test_prints_outside_continuous_trading_fill_nothing() -> None:
    engine = _engine()
    _buy(engine, "b1", 10, 70_000)
    engine.set_session(Session.CLOSING_AUCTION, T0 + SEC)
    assert _fills(engine.on_trade(SAMSUNG, 69_000, 1_000, T0 + 2 * SEC)) == []


# --- auctions ----------------------------------------------------------------


def test_opening_auction_crosses_orders_entered_before_the_open_at_one_price() -> None:
    engine = _engine(holdings={SAMSUNG: (100, 60_000)}, session=Session.PRE_OPEN)
    _buy(engine, "above", 100, 71_500)
    engine.submit("acc", "mkt", SAMSUNG, "buy", "market", 50, 0, T0)
    _buy(engine, "below", 100, 70_000)
    _sell(engine, "sell-low", 40, 70_500)
    _sell(engine, "sell-high", 40, 72_000)
    assert _fills(engine.on_trade(SAMSUNG, 70_000, 1_000, T0 + SEC)) == []  # orders wait for the auction
    events = engine.run_auction(SAMSUNG, 71_000, 10_000, T0 + 2 * SEC)
    fills = sorted((e.client_order_id, e.qty, e.price) for e in events if isinstance(e, Execution))
    assert fills == [("above", 100, 71_000), ("mkt", 50, 71_000), ("sell-low", 40, 71_000)]
    assert {o.client_order_id for o in engine.open_orders()} == {"below", "sell-high"}
    assert engine.last_price(SAMSUNG) == 71_000


def test_auction_fills_are_capped_by_participation_in_price_then_time_priority() -> None:
    engine = _engine(session=Session.PRE_OPEN)
    _buy(engine, "first", 100, 71_500, T0)
    _buy(engine, "second", 100, 71_500, T0 + 1)
    _buy(engine, "best", 30, 72_000, T0 + 2)
    engine.submit("acc", "mkt", SAMSUNG, "buy", "market", 20, 0, T0 + 3)
    events = engine.run_auction(SAMSUNG, 71_000, 1_000, T0 + SEC)  # cap 200
    fills = [(e.client_order_id, e.qty) for e in events if isinstance(e, Execution)]
    assert fills == [("mkt", 20), ("best", 30), ("first", 100), ("second", 50)]


def test_auction_leftovers_take_liquidity_when_continuous_trading_starts() -> None:
    engine = _engine(session=Session.PRE_OPEN)
    _buy(engine, "b1", 300, 71_500)
    assert _fills(engine.run_auction(SAMSUNG, 71_000, 500, T0 + SEC)) == [(100, 71_000)]
    events = engine.set_session(Session.CONTINUOUS, T0 + SEC)
    # depth after 500 shares of auction volume: the 100-share minimum
    assert _fills(events) == [(100, 71_000), (100, 71_100)]


def test_closing_auction_crosses_resting_and_newly_entered_orders_then_the_rest_expires() -> None:
    engine = _engine(holdings={SAMSUNG: (100, 60_000)})
    _buy(engine, "day-bid", 50, 70_000)
    engine.set_session(Session.CLOSING_AUCTION, T0 + SEC)
    assert _fills(_sell(engine, "close-sell", 100, 70_000, T0 + 2 * SEC)) == []  # marketable, yet it waits
    events = engine.run_auction(SAMSUNG, 70_000, 400, T0 + 3 * SEC)  # cap 80
    fills = sorted((e.client_order_id, e.qty, e.price) for e in events if isinstance(e, Execution))
    assert fills == [("close-sell", 80, 70_000), ("day-bid", 50, 70_000)]
    engine.set_session(Session.CLOSED, T0 + 4 * SEC)
    expired = engine.expire_day(T0 + 5 * SEC)
    updates = [e for e in expired if isinstance(e, OrderUpdate)]
    assert [(u.client_order_id, u.status, u.filled_qty, u.canceled_qty) for u in updates] == [
        ("close-sell", OrderStatus.EXPIRED, 80, 20)
    ]


# --- expiry ------------------------------------------------------------------


def test_every_open_day_order_expires_at_the_close_and_releases_its_hold() -> None:
    engine = _engine(cash=30_000_000, holdings={SAMSUNG: (10, 60_000)})
    _buy(engine, "b1", 100, 70_000)
    _buy(engine, "b2", 250, 71_100)  # partly filled by the walk, the rest rests
    _sell(engine, "s1", 10, 80_000)
    events = engine.expire_day(T0 + SEC)
    assert {(e.client_order_id, e.status) for e in events if isinstance(e, OrderUpdate)} == {
        ("b1", OrderStatus.EXPIRED),
        ("b2", OrderStatus.EXPIRED),
        ("s1", OrderStatus.EXPIRED),
    }
    acct = engine.account("acc")
    assert acct is not None and acct.cash_on_hold_won == 0 and acct.buying_power_won == acct.cash_won
    assert engine.positions("acc")[SAMSUNG].sellable_qty == engine.positions("acc")[SAMSUNG].qty
    assert engine.open_orders() == []
    assert len(engine.orders_today()) == 3


def test_a_new_day_clears_orders_and_fills_and_sets_limits_from_the_base_price() -> None:
    engine = _engine()
    _buy(engine, "b1", 10, 71_000)
    engine.on_trade(SAMSUNG, 72_000, 100, T0 + SEC)
    engine.expire_day(T0 + 2 * SEC)
    engine.start_day(dt.date(2026, 1, 6), {})
    assert engine.orders_today() == [] and engine.fills_today() == []
    assert engine.order_by_client_id("b1") is None
    assert engine.price_limits(SAMSUNG) == (50_400, 93_600)  # from yesterday's last print, 72,000
    engine.set_session(Session.CONTINUOUS, T0 + 86_400 * SEC)
    assert _last_update(_buy(engine, "b1", 1, 72_000, T0 + 86_400 * SEC)).status is OrderStatus.FILLED


# --- refusals ----------------------------------------------------------------


def _refusal(events: Sequence[Event]) -> str:
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, OrderUpdate | CancelRefused)
    if isinstance(event, OrderUpdate):
        assert event.status is OrderStatus.REJECTED and event.broker_order_id == ""
    assert event.reason_text
    return str(event.reason_code)


@pytest.mark.parametrize(
    ("reason", "args"),
    [
        ("BAD_TICK", ("acc", "x", SAMSUNG, "buy", "limit", 1, 71_050)),
        ("OUTSIDE_PRICE_LIMITS", ("acc", "x", SAMSUNG, "buy", "limit", 1, 92_400)),
        ("OUTSIDE_PRICE_LIMITS", ("acc", "x", SAMSUNG, "sell", "limit", 1, 49_650)),
        ("INSUFFICIENT_CASH", ("acc", "x", SAMSUNG, "buy", "limit", 10_000, 71_000)),
        ("INSUFFICIENT_CASH", ("acc", "x", SAMSUNG, "buy", "market", 1_000, 0)),
        ("INSUFFICIENT_SHARES", ("acc", "x", SAMSUNG, "sell", "limit", 11, 71_000)),
        ("INSUFFICIENT_SHARES", ("acc", "x", KAKAO, "sell", "market", 1, 0)),
        ("UNKNOWN_CODE", ("acc", "x", "999990", "buy", "limit", 1, 71_000)),
        ("UNKNOWN_ACCOUNT", ("nobody", "x", SAMSUNG, "buy", "limit", 1, 71_000)),
        ("INVALID_QUANTITY", ("acc", "x", SAMSUNG, "buy", "limit", 0, 71_000)),
        ("INVALID_QUANTITY", ("acc", "x", SAMSUNG, "sell", "limit", -5, 71_000)),
        ("INVALID_PRICE", ("acc", "x", SAMSUNG, "buy", "limit", 1, 0)),
        ("INVALID_PRICE", ("acc", "x", SAMSUNG, "buy", "limit", 1, -100)),
        ("INVALID_SIDE", ("acc", "x", SAMSUNG, "short", "limit", 1, 71_000)),
        ("INVALID_ORDER_TYPE", ("acc", "x", SAMSUNG, "buy", "stop", 1, 71_000)),
        ("DUPLICATE_CLIENT_ORDER_ID", ("acc", "held", SAMSUNG, "buy", "limit", 1, 70_000)),
    ],
)
def test_bad_orders_are_refused_with_a_reason_and_change_nothing(reason: str, args: tuple[Any, ...]) -> None:
    engine = _engine(cash=50_000_000, holdings={SAMSUNG: (10, 60_000)})
    _buy(engine, "held", 1, 70_000)
    before = engine.to_state()
    assert _refusal(engine.submit(*args, T0 + SEC)) == reason
    assert engine.to_state() == before


@pytest.mark.parametrize("session", [Session.CLOSED, Session.AFTER_HOURS])
@pytest.mark.parametrize("order_type", ["limit", "market"])
def test_orders_outside_trading_sessions_are_refused_as_market_closed(session: Session, order_type: str) -> None:
    engine = _engine(session=session)
    price = 71_000 if order_type == "limit" else 0
    assert _refusal(engine.submit("acc", "x", SAMSUNG, "buy", order_type, 1, price, T0)) == "MARKET_CLOSED"


def test_orders_before_the_first_trading_day_are_refused_as_market_closed() -> None:
    engine = MatchingEngine(INSTRUMENTS)
    engine.open_account("acc", 1_000_000)
    engine.set_session(Session.CONTINUOUS, T0)
    assert _refusal(engine.submit("acc", "x", SAMSUNG, "buy", "limit", 1, 71_000, T0)) == "MARKET_CLOSED"


# --- cancels -----------------------------------------------------------------


def test_whole_cancel_by_client_id_releases_the_hold() -> None:
    engine = _engine(cash=1_000_000)
    _buy(engine, "b1", 10, 70_000)
    update = _last_update(engine.cancel("b1", 0, T0 + 1))
    assert (update.status, update.canceled_qty, update.remaining_qty) == (OrderStatus.CANCELED, 10, 0)
    acct = engine.account("acc")
    assert acct is not None and acct.cash_on_hold_won == 0
    assert engine.open_orders() == []


def test_partial_cancel_by_broker_id_reduces_the_remaining_quantity() -> None:
    engine = _engine(cash=1_000_000)
    broker_id = _last_update(_buy(engine, "b1", 10, 70_000)).broker_order_id
    assert broker_id == "0000000001"
    update = _last_update(engine.cancel(broker_id, 4, T0 + 1))
    assert (update.status, update.remaining_qty, update.canceled_qty) == (OrderStatus.ACCEPTED, 6, 4)
    acct = engine.account("acc")
    assert acct is not None and acct.cash_on_hold_won == 6 * 70_010


def test_cancelling_exactly_what_remains_cancels_the_order() -> None:
    engine = _engine()
    _buy(engine, "b1", 10, 70_000)
    assert _last_update(engine.cancel("b1", 10, T0 + 1)).status is OrderStatus.CANCELED


def test_cancel_of_more_than_remains_is_refused_and_changes_nothing() -> None:
    engine = _engine()
    _buy(engine, "b1", 10, 70_000)
    engine.on_trade(SAMSUNG, 69_900, 30, T0 + 1)  # fills 6
    before = engine.to_state()
    assert _refusal(engine.cancel("b1", 5, T0 + 2)) == "CANCEL_QTY_EXCEEDS_REMAINING"
    assert engine.to_state() == before
    assert _last_update(engine.cancel("b1", 4, T0 + 3)).status is OrderStatus.CANCELED


def test_cancel_of_an_unknown_or_closed_order_is_refused() -> None:
    engine = _engine()
    _buy(engine, "filled", 1, 71_000)
    assert _refusal(engine.cancel("nope", 0, T0)) == "UNKNOWN_ORDER"
    assert _refusal(engine.cancel("filled", 0, T0)) == "ORDER_NOT_OPEN"
    _buy(engine, "b1", 1, 70_000)
    engine.cancel("b1", 0, T0)
    assert _refusal(engine.cancel("b1", 0, T0)) == "ORDER_NOT_OPEN"
    assert _refusal(engine.cancel("filled", -1, T0)) == "ORDER_NOT_OPEN"
    _buy(engine, "b2", 1, 70_000)
    assert _refusal(engine.cancel("b2", -1, T0)) == "INVALID_QUANTITY"


# --- identities and queries --------------------------------------------------


def test_orders_get_zero_padded_broker_numbers_and_fills_unique_exec_ids() -> None:
    engine = _engine()
    first = _buy(engine, "b1", 250, 71_200)
    second = _buy(engine, "b2", 10, 70_000)
    assert [_last_update(first).broker_order_id, _last_update(second).broker_order_id] == ["0000000001", "0000000002"]
    exec_ids = [f.exec_id for f in engine.fills_today()]
    assert len(exec_ids) == 3 == len(set(exec_ids))
    assert all(e.client_order_id == "b1" for e in engine.fills_today("acc"))
    assert engine.order_by_broker_id("0000000002") is engine.order_by_client_id("b2")


def test_agent_id_is_echoed_on_order_updates_and_fills() -> None:
    engine = _engine()
    events = engine.submit("acc", "a1-20260105-1", SAMSUNG, "buy", "limit", 1, 71_000, T0, agent_id="a1")
    assert {e.agent_id for e in events if isinstance(e, OrderUpdate | Execution)} == {"a1"}


def test_open_account_refuses_bad_set_up() -> None:
    engine = MatchingEngine(INSTRUMENTS)
    engine.open_account("acc", 0)
    with pytest.raises(ValueError, match="already open"):
        engine.open_account("acc", 0)
    with pytest.raises(ValueError, match="unknown code"):
        engine.open_account("b", 0, {"999990": (1, 1)})
    with pytest.raises(ValueError, match="non-negative"):
        engine.open_account("c", -1)


# --- state -------------------------------------------------------------------


def _busy_engine(params: MatchingParams = BOOK_OFF) -> MatchingEngine:
    engine = _engine(cash=50_000_000, holdings={SAMSUNG: (100, 60_000), KAKAO: (50, 45_000)}, params=params)
    _buy(engine, "b1", 250, 71_100)  # walks, rests 50
    _buy(engine, "b2", 30, 70_000, T0 + 1)
    engine.on_trade(SAMSUNG, 70_000, 40, T0 + 2)  # works off part of b2's queue
    _sell(engine, "s1", 40, 72_000, T0 + 3)
    engine.cancel("s1", 10, T0 + 4)
    _sell(engine, "k1", 20, 50_000, T0 + 5, code=KAKAO)
    engine.submit("acc", "m1", KAKAO, "buy", "market", 10, 0, T0 + 6)
    return engine


@pytest.mark.parametrize("params", [BOOK_OFF, BOOK_ON], ids=["book_off", "book_on"])
def test_state_round_trips_through_json_and_behaves_the_same_afterwards(params: MatchingParams) -> None:
    engine = _busy_engine(params)
    state = json.loads(json.dumps(engine.to_state()))
    restored = MatchingEngine.from_state(state, INSTRUMENTS)
    assert restored.to_state() == engine.to_state()
    assert restored.account("acc") == engine.account("acc")
    assert restored.positions("acc") == engine.positions("acc")
    for e in (engine, restored):
        e.on_trade(SAMSUNG, 70_000, 500, T0 + 10)
        e.on_trade(SAMSUNG, 72_100, 500, T0 + 11)
        e.submit("acc", "b3", SAMSUNG, "buy", "limit", 5, 72_100, T0 + 12)
    assert restored.to_state() == engine.to_state()
    assert [f.exec_id for f in restored.fills_today()] == [f.exec_id for f in engine.fills_today()]


def test_changes_taken_after_each_step_rebuild_the_orders_and_fills_exactly() -> None:
    """An incremental store that writes only what take_changes() reports ends up with to_state()'s orders and fills."""
    engine = _engine(cash=50_000_000, holdings={SAMSUNG: (100, 60_000)})
    orders: dict[str, dict[str, Any]] = {}
    fills: list[dict[str, Any]] = []

    def store_changes() -> None:
        changes = engine.take_changes()
        if changes.new_day:
            orders.clear()
            fills.clear()
        orders.update({o.broker_order_id: MatchingEngine.order_state(o) for o in changes.orders})
        fills.extend(MatchingEngine.fill_state(f) for f in changes.fills)
        state = engine.to_state()
        assert list(orders.values()) == sorted(state["orders"], key=lambda o: o["seq"])
        assert fills == state["fills"]

    store_changes()
    _buy(engine, "b1", 250, 71_100)  # walks the levels, rests the rest
    store_changes()
    _buy(engine, "b2", 30, 70_000, T0 + 1)
    store_changes()
    engine.on_trade(SAMSUNG, 70_000, 40, T0 + 2)  # only b2's queue position moves: no event, still a change
    store_changes()
    _sell(engine, "s1", 40, 72_000, T0 + 3)
    engine.cancel("s1", 10, T0 + 4)
    store_changes()
    engine.on_trade(SAMSUNG, 69_900, 5_000, T0 + 5)  # fills resting buys
    store_changes()
    assert engine.take_changes().orders == [] and engine.take_changes().fills == []
    engine.expire_day(T0 + 6)
    store_changes()
    engine.start_day(dt.date(2026, 1, 6), {SAMSUNG: 70_000})
    assert engine.take_changes().new_day
    restored = MatchingEngine.from_state(engine.to_state(), INSTRUMENTS)
    assert restored.take_changes() == type(restored.take_changes())(new_day=False, orders=[], fills=[])


def test_corrupt_state_is_refused_with_a_clear_error() -> None:
    state = _busy_engine().to_state()
    del state["accounts"]
    with pytest.raises(ValueError, match="bad matching-engine state"):
        MatchingEngine.from_state(state, INSTRUMENTS)


# --- bookkeeping under random order flow --------------------------------------

_PRICES = [71_000 + 100 * k for k in range(-15, 16)]
_FAR_PRICES = [64_000, 66_500, 75_500, 78_000]  # past the VI thresholds from 71,000

_order = st.tuples(
    st.just("order"),
    st.sampled_from(["buy", "sell"]),
    st.sampled_from(["limit", "limit", "market"]),
    st.sampled_from([*range(1, 201), 0, -1]),
    st.sampled_from([*_PRICES, 71_050, 0]),
)
_trade = st.tuples(st.just("trade"), st.sampled_from([*_PRICES, *_FAR_PRICES]), st.integers(0, 3_000))
_op = st.one_of(
    _order,
    _order,
    _order,
    _trade,
    _trade,
    st.tuples(st.just("cancel"), st.integers(0, 1_000), st.integers(-1, 200)),
    st.tuples(st.just("bar"), st.sampled_from(_PRICES), st.integers(0, 5), st.integers(0, 5), st.integers(0, 5_000)),
    st.tuples(st.just("session"), st.sampled_from([Session.CONTINUOUS, Session.CONTINUOUS, *Session])),
    st.tuples(st.just("auction"), st.sampled_from(_PRICES), st.integers(0, 3_000)),
    st.tuples(st.just("expire")),
)


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(_op, min_size=30, max_size=120),
    cash=st.sampled_from([1_000_000_000, 50_000_000, 3_000_000, 0]),
    held=st.sampled_from([5_000, 300, 20, 0]),
    params=st.sampled_from([BOOK_OFF, BOOK_ON]),
)
def test_bookkeeping_stays_consistent_under_random_order_flow(
    ops: list[tuple[Any, ...]], cash: int, held: int, params: MatchingParams
) -> None:
    engine = _engine(cash=cash, holdings={SAMSUNG: (held, 65_000)} if held else {}, params=params)
    costs = CostModel()
    all_fills: list[Execution] = []
    t = T0
    for n, op in enumerate(ops):
        t += SEC
        kind = op[0]
        if kind == "order":
            _, side, order_type, qty, price = op
            events = engine.submit("acc", f"o{n}", SAMSUNG, side, order_type, qty, price, t)
        elif kind == "cancel":
            _, ref, qty = op
            events = engine.cancel(f"o{ref % (n + 1)}", qty, t)
        elif kind == "trade":
            events = engine.on_trade(SAMSUNG, op[1], op[2], t)
            if op[1] in _FAR_PRICES:
                t += 60 * SEC  # a VI can end while the flow goes on
        elif kind == "bar":
            _, close, down, up, volume = op
            low, high = max(close - 100 * down, 49_700), min(close + 100 * up, 92_300)
            events = engine.on_bar(SAMSUNG, close, high, low, close, volume, t)
        elif kind == "session":
            events = engine.set_session(op[1], t)
        elif kind == "auction":
            events = engine.run_auction(SAMSUNG, op[1], op[2], t)
        else:
            events = engine.expire_day(t)
        all_fills.extend(e for e in events if isinstance(e, Execution))
        lower, upper = engine.price_limits(SAMSUNG) or (0, 0)
        for e in events:
            if isinstance(e, Execution):  # never through the order's limit, never outside the day's limits
                order = engine.order_by_broker_id(e.broker_order_id)
                assert order is not None and lower <= e.price <= upper
                if order.order_type == "limit":
                    assert e.price <= order.price if order.side == "buy" else e.price >= order.price

        acct = engine.account("acc")
        assert acct is not None
        assert acct.cash_won >= acct.cash_on_hold_won >= 0
        open_orders = engine.open_orders("acc")
        assert acct.cash_on_hold_won == sum(o.reserved_won for o in open_orders if o.side == "buy")
        for order in engine.orders_today("acc"):
            assert 0 <= order.filled_qty <= order.qty
            assert order.filled_qty + order.canceled_qty + order.remaining_qty == order.qty
            assert (order.remaining_qty > 0) == order.is_open
        bought = sum(f.qty for f in all_fills if f.side == "buy")
        sold = sum(f.qty for f in all_fills if f.side == "sell")
        pos = engine.positions("acc").get(SAMSUNG)
        qty_now = pos.qty if pos else 0
        assert qty_now == held + bought - sold >= 0
        offered = sum(o.remaining_qty for o in open_orders if o.side == "sell")
        assert 0 <= offered <= qty_now
        # each order is charged, over its executions, the cost of its total however they split it
        per_order: dict[str, list[Execution]] = {}
        for f in all_fills:
            per_order.setdefault(f.broker_order_id, []).append(f)
        for execs in per_order.values():
            total = sum(f.qty * f.price for f in execs)
            charged = (sum(f.fee_won for f in execs), sum(f.tax_won for f in execs))
            assert charged == costs.fill_costs(execs[0].side, total, DAY_2026, "KOSPI")
            assert all(f.fee_won >= 0 and f.tax_won >= 0 for f in execs)
        cash_flow = sum(
            (-1 if f.side == "buy" else 1) * f.qty * f.price - f.fee_won - f.tax_won for f in all_fills
        )
        assert acct.cash_won == cash + cash_flow
        assert acct.fees_won == sum(f.fee_won for f in all_fills)
    assert len({f.exec_id for f in all_fills}) == len(all_fills)
    assert engine.fills_today() == all_fills
