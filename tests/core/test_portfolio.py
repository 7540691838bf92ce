"""The agent's book against hand-worked examples, and rebuild-from-sync parity."""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.costs import DEFAULT_COSTS
from core.portfolio import DUPLICATE_ORDER, NO_UPPER_LIMIT, UNKNOWN_ORDER, Portfolio

S = "005930"
# 2026-03-02 10:00 KST, when the sell tax is 0.20 %
T2026 = int(dt.datetime(2026, 3, 2, 1, 0, tzinfo=dt.UTC).timestamp()) * 1_000_000_000
T2025 = int(dt.datetime(2025, 3, 4, 1, 0, tzinfo=dt.UTC).timestamp()) * 1_000_000_000


def test_limit_buy_holds_price_times_qty_plus_commission() -> None:
    book = Portfolio(10_000_000)
    assert book.on_order_placed("a-1", S, "buy", 100, 71_000, T2026) is None
    # 7,100,000 + commission 0.0142 % = 1,008.2 -> 1,008
    assert book.cash_on_hold_won == 7_101_008
    assert book.cash_available_won == 2_898_992
    pos = book.positions[S]
    assert (pos.pending_buy_qty, pos.pending_buy_won) == (100, 7_100_000)


def test_market_buy_holds_qty_at_the_upper_limit() -> None:
    book = Portfolio(10_000_000)
    assert book.on_order_placed("a-1", S, "buy", 10, 0, T2026) == NO_UPPER_LIMIT
    book.set_upper_limit(S, 92_300)
    assert book.on_order_placed("a-1", S, "buy", 10, 0, T2026) is None
    assert book.cash_on_hold_won == 923_000 + 131


def test_partial_fills_release_the_hold_pro_rata_and_book_fees() -> None:
    book = Portfolio(10_000_000)
    book.on_order_placed("a-1", S, "buy", 100, 71_000, T2026)
    assert book.on_fill("x1", "a-1", S, "buy", 40, 71_000, 403, 0, T2026)
    assert book.cash_on_hold_won == 7_101_008 - 2_840_403
    assert book.cash_won == 10_000_000 - 2_840_000 - 403
    assert book.cash_available_won == 2_898_992
    assert book.positions[S].pending_buy_qty == 60
    # the rest fills a tick better: the last fill frees all that was held
    assert book.on_fill("x2", "a-1", S, "buy", 60, 70_900, 604, 0, T2026)
    assert book.cash_on_hold_won == 0
    assert book.cash_won == 2_904_993
    pos = book.positions[S]
    assert (pos.qty, pos.cost_won, pos.avg_price) == (100, 7_094_000, 70_940)
    assert (pos.pending_buy_qty, pos.pending_buy_won) == (0, 0)
    assert book.realized_pnl_won == -1_007  # buy fees are realised when paid
    assert book.open_orders() == []


def _bought_100() -> Portfolio:
    book = Portfolio(10_000_000)
    book.on_order_placed("a-1", S, "buy", 100, 71_000, T2026)
    book.on_fill("x1", "a-1", S, "buy", 40, 71_000, 403, 0, T2026)
    book.on_fill("x2", "a-1", S, "buy", 60, 70_900, 604, 0, T2026)
    return book


def test_sell_realises_against_the_average_less_its_fee_and_the_2026_tax() -> None:
    book = _bought_100()
    fee, tax = DEFAULT_COSTS.fill_costs("sell", 3_600_000, dt.date(2026, 3, 2))
    assert (fee, tax) == (511, 7_200)
    book.on_order_placed("a-2", S, "sell", 50, 72_000, T2026)
    assert book.positions[S].sellable_qty == 50
    assert book.positions[S].pending_sell_won == 3_600_000
    book.on_fill("x3", "a-2", S, "sell", 50, 72_000, fee, tax, T2026)
    pos = book.positions[S]
    # (72,000 - 70,940) * 50 - 511 - 7,200 = 45,289; plus the buy fees already realised
    assert pos.realized_pnl_won == -1_007 + 45_289
    assert book.realized_pnl_won == 44_282
    assert (pos.qty, pos.cost_won) == (50, 3_547_000)
    assert book.cash_won == 6_497_282
    assert (book.fees_won, book.taxes_won) == (1_518, 7_200)
    book.mark(S, 73_000)
    assert book.unrealized_pnl_won() == 103_000
    assert book.equity_won() == 10_000_000 + 44_282 + 103_000


def test_break_even_follows_the_dated_tax() -> None:
    book = _bought_100()
    book.mark(S, 71_000)
    f = 142 / 1_000_000
    snap = book.snapshot()["positions"][S]
    assert snap["bep_rate"] == pytest.approx((1 + f) / (1 - f - 0.0020))
    assert snap["break_even_price"] == pytest.approx(70_940 * (1 + f) / (1 - f - 0.0020), abs=0.01)
    assert snap["return_after_costs"] == pytest.approx(71_000 * (1 - f - 0.0020) / (70_940 * (1 + f)) - 1)
    book.last_ts_ns = T2025
    assert book.bep_rate(S) == pytest.approx((1 + f) / (1 - f - 0.0015))


def test_starting_holding_counts_in_capital_and_realises_on_sale() -> None:
    book = Portfolio(1_000_000)
    assert book.set_start_holding(S, 10, 60_000) is None
    assert book.capital_won == 1_600_000
    book.on_order_placed("a-1", S, "sell", 10, 66_000, T2026)
    book.on_fill("x1", "a-1", S, "sell", 10, 66_000, 94, 1_320, T2026)
    assert book.realized_pnl_won == 660_000 - 600_000 - 94 - 1_320
    assert book.cash_won == 1_658_586
    snap = book.snapshot()
    assert snap["positions"][S]["start_qty"] == 10 and snap["positions"][S]["qty"] == 0
    assert snap["return_on_allocation"] == pytest.approx(58_586 / 1_600_000)


def test_reject_cancel_and_expiry_release_everything_held() -> None:
    book = Portfolio(10_000_000)
    book.set_start_holding(S, 30, 70_000)
    book.on_order_placed("a-1", S, "buy", 10, 70_000, T2026)
    book.on_order_placed("a-2", S, "sell", 30, 72_000, T2026)
    book.on_order_placed("a-3", S, "buy", 5, 69_000, T2026)
    book.on_fill("x1", "a-3", S, "buy", 2, 69_000, 20, 0, T2026)
    book.on_order_event("a-1", "rejected", T2026)
    book.on_order_event("a-2", "canceled", T2026)
    book.on_order_event("a-3", "expired", T2026)
    pos = book.positions[S]
    assert book.cash_on_hold_won == 0
    assert (pos.pending_buy_qty, pos.pending_buy_won, pos.pending_sell_qty, pos.pending_sell_won) == (0, 0, 0, 0)
    assert book.cash_available_won == 10_000_000 - 138_000 - 20
    assert pos.qty == 32


def test_a_fill_applied_twice_is_a_no_op() -> None:
    book = _bought_100()
    before = book.snapshot()
    assert not book.on_fill("x2", "a-1", S, "buy", 60, 70_900, 604, 0, T2026)
    assert book.snapshot() == before


def test_refusals_are_reason_codes() -> None:
    book = Portfolio(1_000_000)
    book.on_order_placed("a-1", S, "buy", 1, 70_000, T2026)
    assert book.on_order_placed("a-1", S, "buy", 1, 70_000, T2026) == DUPLICATE_ORDER
    assert book.on_order_event("nope", "canceled", T2026) == UNKNOWN_ORDER


# --- rebuild parity -----------------------------------------------------------


class OrderRec(NamedTuple):
    client_order_id: str
    code: str
    side: str
    qty: int
    price: int
    status: str
    ts_ns: int


class FillRec(NamedTuple):
    exec_id: str
    client_order_id: str
    code: str
    side: str
    qty: int
    price: int
    fee_won: int
    tax_won: int
    ts_ns: int


step = st.one_of(
    st.tuples(st.just("place"), st.sampled_from(["buy", "sell"]), st.integers(1, 50), st.integers(-20, 20), st.booleans()),
    st.tuples(st.just("fill"), st.integers(0, 30), st.integers(1, 50), st.integers(-5, 5)),
    st.tuples(st.just("end"), st.integers(0, 30), st.sampled_from(["canceled", "rejected", "expired", "accepted"])),
)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(step, max_size=40), start_qty=st.integers(0, 100), codes=st.sampled_from([[S], [S, "005935"]]))
def test_rebuild_from_orders_and_fills_equals_the_incremental_book(steps, start_qty, codes) -> None:
    upper = {S: 92_300, "005935": 76_500}
    book = Portfolio(50_000_000, markets={S: "KOSPI", "005935": "KOSPI"})
    book.set_start_holding(S, start_qty, 70_000)
    for c, u in upper.items():
        book.set_upper_limit(c, u)
    orders: dict[str, list] = {}
    fills: list[FillRec] = []
    ts = T2026
    for i, s in enumerate(steps):
        ts += 1_000_000_000
        code = codes[i % len(codes)]
        if s[0] == "place":
            _, side, qty, off, market = s
            price = 0 if market else 70_000 + 100 * off
            if side == "sell" and (market or code not in book.positions or book.positions[code].sellable_qty < qty):
                continue
            coid = f"a-20260302-{len(orders) + 1}"
            assert book.on_order_placed(coid, code, side, qty, price, ts) is None
            orders[coid] = [coid, code, side, qty, price, "accepted", ts]
        elif s[0] == "fill" and orders:
            coid = list(orders)[s[1] % len(orders)]
            o = book.orders[coid]
            if not o.is_open:
                continue
            qty = min(s[2], o.remaining_qty)
            price = (o.price or 70_000) + (100 * s[3] if o.side == "buy" and o.price == 0 else 0)
            fee, tax = DEFAULT_COSTS.fill_costs(o.side, price * qty, dt.date(2026, 3, 2))
            f = FillRec(f"x{len(fills)}", coid, o.code, o.side, qty, price, fee, tax, ts)
            fills.append(f)
            assert book.on_fill(*f)
            if not book.orders[coid].is_open:
                orders[coid][5], orders[coid][6] = "filled", ts
        elif s[0] == "end" and orders:
            coid = list(orders)[s[1] % len(orders)]
            if not book.orders[coid].is_open:
                continue
            book.on_order_event(coid, s[2], ts)
            orders[coid][5], orders[coid][6] = s[2], ts

    rebuilt = Portfolio.rebuild(
        50_000_000,
        {S: (start_qty, 70_000)},
        [OrderRec(*o) for o in orders.values()],
        fills,
        markets={S: "KOSPI", "005935": "KOSPI"},
        upper_limits=upper,
    )
    assert rebuilt.snapshot() == book.snapshot()
    # the won identity the documentation promises
    assert book.equity_won() == book.capital_won + book.realized_pnl_won + book.unrealized_pnl_won()


def test_shares_booked_at_no_cost_by_an_adjustment_show_in_the_book_without_a_return() -> None:
    book = Portfolio(allocation_won=1_000_000)
    assert book.on_adjustment("005930", 3, -12_345) is None
    book.mark("005930", 70_000)
    snap = book.snapshot()
    assert snap["positions"]["005930"]["qty"] == 3 and snap["positions"]["005930"]["return_after_costs"] == 0.0
    assert snap["cash_won"] == 1_000_000 - 12_345 and snap["adjustments_won"] == -12_345
