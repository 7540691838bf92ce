"""The gateway's order book: order identity, notices before replies, unknown fates, one fill from two sources."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from core.costs import DEFAULT_COSTS
from core.krx import KST
from core.messages import Fill, OrderEvent, OrderStatus
from services.kis_gateway.book import (
    AMBIGUOUS,
    NEVER_ARRIVED_AFTER_NS,
    NEVER_REACHED_BROKER,
    KisBook,
    exec_id,
)
from services.kis_gateway.store import GatewayStore

DATE = "20260305"
T0 = int(dt.datetime(2026, 3, 5, 10, 0, 0, tzinfo=KST).timestamp() * 1e9)
S = 1_000_000_000


@dataclass
class N:
    odno: str
    qty: int
    price: int = 70_000
    is_fill: bool = True
    rctf_cls: str = "0"
    orig_odno: str = ""
    hhmmss: str = "100001"
    refused: bool = False
    accepted: str = "2"


@dataclass
class D:
    odno: str
    qty: int = 10
    price: int = 70_000
    filled_qty: int = 0
    avg_price: int = 0
    filled_value_won: int = 0
    remaining_qty: int = 10
    canceled: bool = False
    rejected_qty: int = 0
    code: str = "005930"
    side: str = "buy"
    ord_tmd: str = "100001"
    orgn_odno: str = ""
    ord_dt: str = DATE


def book_with_order(coid: str = "a-20260305-1", side: str = "buy") -> KisBook:
    book = KisBook()
    book.register(coid, "a", "005930", side, "limit", 10, 70_000, DATE, T0)
    return book


def fills(out) -> list[Fill]:
    return [m for _, m in out if isinstance(m, Fill)]


def test_a_notice_that_beats_the_reply_is_applied_when_the_reply_lands() -> None:
    book = book_with_order()
    assert book.on_notice(N("0000000123", 4), DATE, T0) == []  # no order has that number yet
    out = book.accepted("a-20260305-1", "0000000123", "00950", "100001", T0)
    assert [type(m).__name__ for _, m in out] == ["OrderEvent", "Fill", "OrderEvent"]
    f = fills(out)[0]
    assert (f.exec_id, f.qty, f.broker_order_id) == (exec_id(DATE, "123", 4), 4, "123")
    assert f.fee_won > 0 and f.tax_won == 0


def test_the_same_fill_from_a_notice_and_from_the_daily_orders_is_one_fill() -> None:
    book = book_with_order()
    book.accepted("a-20260305-1", "123", "00950", "100001", T0)
    assert len(fills(book.on_notice(N("123", 4), DATE, T0))) == 1
    # the daily orders show the same 4 shares: nothing new
    assert fills(book.on_daily([D("0000000123", filled_qty=4, avg_price=70_000, remaining_qty=6)], DATE, T0)) == []
    # a fill whose notice was lost shows up in the daily orders with the cumulative quantity
    caught = fills(book.on_daily([D("123", filled_qty=10, avg_price=70_300, filled_value_won=703_000, remaining_qty=0)], DATE, T0))
    assert [(f.qty, f.price, f.exec_id) for f in caught] == [(6, 70_500, exec_id(DATE, "123", 10))]
    # and its late notice is not applied a second time
    assert fills(book.on_notice(N("123", 6, 70_500), DATE, T0)) == []
    # a notice delivered twice counts once
    twice = book_with_order("a-20260305-2")
    twice.accepted("a-20260305-2", "124", "", "100001", T0)
    assert len(fills(twice.on_notice(N("124", 2), DATE, T0))) == 1
    assert fills(twice.on_notice(N("124", 2), DATE, T0)) == []
    assert twice.orders["a-20260305-2"].filled_qty == 2
    assert book.orders["a-20260305-1"].status is OrderStatus.FILLED


def test_executions_caught_up_from_the_daily_orders_cost_what_kis_charged_to_the_won() -> None:
    """Missed executions at several prices: their amount and costs are KIS's to the won, however they split."""
    executions = [(2, 70_000), (3, 70_000), (1, 70_100), (3, 70_300)]  # the first one's notice comes, no other
    day = dt.date(2026, 3, 5)
    kis_fees = kis_taxes = amount = 0
    for qty, price in executions:  # what KIS charged, execution by execution
        fee, tax = DEFAULT_COSTS.order_fill_costs("sell", amount, qty * price, day)
        kis_fees, kis_taxes, amount = kis_fees + fee, kis_taxes + tax, amount + qty * price
    book = book_with_order(side="sell")
    book.accepted("a-20260305-1", "123", "00950", "100001", T0)
    assert len(fills(book.on_notice(N("123", 2, 70_000), DATE, T0))) == 1
    caught = fills(book.on_daily([D("123", filled_qty=9, avg_price=amount // 9, filled_value_won=amount,
                                    remaining_qty=1)], DATE, T0))
    # 491,000 won for 7 shares is no whole price: 1 at 70,142 and 6 at 70,143 make it to the won
    assert [(f.qty, f.price) for f in caught] == [(1, 70_142), (6, 70_143)]
    assert caught[-1].exec_id == exec_id(DATE, "123", 9)
    order = book.orders["a-20260305-1"]
    assert (order.filled_qty, order.filled_won) == (9, amount)
    assert (order.fees_won, order.taxes_won) == (kis_fees, kis_taxes) == DEFAULT_COSTS.fill_costs("sell", amount, day)
    # the same daily orders again, or the late notices: nothing more
    assert fills(book.on_daily([D("123", filled_qty=9, avg_price=amount // 9, filled_value_won=amount,
                                  remaining_qty=1)], DATE, T0)) == []
    assert fills(book.on_notice(N("123", 3, 70_300), DATE, T0)) == []


def test_a_notice_after_a_catch_up_is_checked_against_the_daily_orders_late_or_new() -> None:
    """Notices have no id: after the daily orders brought executions, a notice may be one of them, late."""
    def catch_up(book: KisBook, qty: int) -> list[Fill]:
        return fills(book.on_daily([D("123", qty=30, filled_qty=qty, avg_price=33_900,
                                      filled_value_won=qty * 33_900, remaining_qty=30 - qty)], DATE, T0))

    # the late notice of an execution the daily orders brought: nothing booked twice
    book = KisBook()
    book.register("a-20260305-1", "a", "263750", "sell", "limit", 30, 33_900, DATE, T0)
    book.accepted("a-20260305-1", "123", "00950", "100001", T0)
    assert [f.qty for f in catch_up(book, 8)] == [8]
    assert fills(book.on_notice(N("123", 8, 33_900), DATE, T0)) == [] and book.daily_check_due
    assert catch_up(book, 8) == []
    assert [f.qty for f in fills(book.on_notice(N("123", 5, 33_900, hhmmss="100200"), DATE, T0))] == [5]
    assert book.orders["a-20260305-1"].filled_qty == 13

    # a new execution's notice before the late one: the daily orders book the new one, the late one adds nothing
    book = KisBook()
    book.register("a-20260305-1", "a", "263750", "sell", "limit", 30, 33_900, DATE, T0)
    book.accepted("a-20260305-1", "123", "00950", "100001", T0)
    assert [f.qty for f in catch_up(book, 8)] == [8]
    assert fills(book.on_notice(N("123", 5, 33_900, hhmmss="100200"), DATE, T0)) == []
    assert [f.qty for f in catch_up(book, 13)] == [5]
    assert fills(book.on_notice(N("123", 8, 33_900), DATE, T0)) == []
    assert catch_up(book, 13) == []
    order = book.orders["a-20260305-1"]
    assert (order.filled_qty, order.filled_won, len(book.fills)) == (13, 13 * 33_900, 2)


def test_an_order_of_unknown_fate_is_adopted_from_the_one_matching_daily_order() -> None:
    book = book_with_order()
    book.unknown("a-20260305-1", "EGW00301", T0)
    assert book.orders["a-20260305-1"].event(T0).status is OrderStatus.SUBMITTED
    out = book.on_daily([D("777", filled_qty=10, avg_price=70_000, remaining_qty=0)], DATE, T0 + S)
    events = [m for _, m in out if isinstance(m, OrderEvent)]
    assert events[0].status is OrderStatus.ACCEPTED and events[0].broker_order_id == "777"
    assert book.orders["a-20260305-1"].status is OrderStatus.FILLED


def test_an_order_never_seen_at_kis_is_refused_only_after_looking_long_enough() -> None:
    book = book_with_order()
    book.wall_ns = 5 * S
    book.unknown("a-20260305-1", "timeout", T0)
    book.wall_ns = 5 * S + NEVER_ARRIVED_AFTER_NS - 1
    assert book.on_daily([], DATE, T0) == []
    book.wall_ns = 5 * S + NEVER_ARRIVED_AFTER_NS
    out = book.on_daily([], DATE, T0)
    assert out[0][1].status is OrderStatus.REJECTED and out[0][1].reason_code == NEVER_REACHED_BROKER


def test_two_matching_orders_leave_it_ambiguous_flagged_and_the_code_reduce_only() -> None:
    book = book_with_order()
    book.unknown("a-20260305-1", "dropped", T0)
    out = book.on_daily([D("777"), D("778", ord_tmd="100005")], DATE, T0)
    assert out == []
    assert book.orders["a-20260305-1"].state == AMBIGUOUS
    assert book.reduce_only_codes() == {"005930"}
    assert book.alerts and book.alerts[0][0] == "kis_order_ambiguous"
    book.adopt("a-20260305-1", "778", T0)
    assert book.reduce_only_codes() == set()
    # an order another firm order claimed is not a candidate
    other = book_with_order("a-20260305-2")
    other.accepted("a-20260305-2", "777", "", "100001", T0)
    other.register("a-20260305-3", "a", "005930", "buy", "limit", 10, 70_000, DATE, T0)
    other.unknown("a-20260305-3", "dropped", T0)
    other.on_daily([D("777"), D("778")], DATE, T0)
    assert other.orders["a-20260305-3"].odno == "778"


def test_cancels_by_reply_notice_and_daily_orders_count_once(tmp_path: Path) -> None:
    book = book_with_order()
    book.accepted("a-20260305-1", "123", "00950", "100001", T0)
    book.on_notice(N("123", 3), DATE, T0)
    book.cancel_sent("a-20260305-1", 0, T0)
    assert book.orders["a-20260305-1"].status is OrderStatus.CANCEL_PENDING
    out = book.cancel_done("a-20260305-1", "0000000130", 7, T0)
    assert out[0][1].status is OrderStatus.CANCELED
    # the cancel's confirmation notice and the daily orders say the same: nothing more
    assert book.on_notice(N("130", 7, is_fill=False, rctf_cls="2", orig_odno="123"), DATE, T0) == []
    assert book.on_daily([D("123", filled_qty=3, avg_price=70_000, remaining_qty=0),
                          D("130", qty=7, orgn_odno="123", remaining_qty=0)], DATE, T0) == []
    assert book.orders["a-20260305-1"].canceled_qty == 7
    # the journal gives it all back after a restart
    store = GatewayStore(tmp_path / "gateway.sqlite")
    store.save(book)
    again = KisBook()
    store.load(again)
    o = again.orders["a-20260305-1"]
    assert (o.state, o.odno, o.filled_qty, o.canceled_qty) == ("accepted", "123", 3, 7)
    assert set(again.fills) == set(book.fills)
    assert again.cancel_odnos == {(DATE, "130"): "a-20260305-1"}
    store.close()


def test_an_order_sending_when_the_gateway_stopped_is_of_unknown_fate_after_a_restart(tmp_path: Path) -> None:
    book = book_with_order()
    store = GatewayStore(tmp_path / "gateway.sqlite")
    store.save(book)
    again = KisBook(wall_ns=9 * S)
    store.load(again)
    o = again.orders["a-20260305-1"]
    assert o.state == "unknown" and o.looked_since_ns == 9 * S
    store.close()


def test_kis_stamping_the_order_on_a_clock_behind_ours_still_finds_it() -> None:
    book = book_with_order()
    book.unknown("a-20260305-1", "dropped", T0)
    # sent at 10:00:00 by our clock, stamped 09:59:40 by KIS's (20 s behind): the same order, not a stranger
    book.on_daily([D("777", ord_tmd="095940", filled_qty=10, avg_price=70_000, remaining_qty=0)], DATE, T0)
    assert book.orders["a-20260305-1"].odno == "777"
    # on a rehearsal clock 300 times the wall, ten minutes of market time is two seconds of skew
    fast = book_with_order("a-20260305-2")
    fast.clock_speed = 300
    fast.unknown("a-20260305-2", "dropped", T0)
    fast.on_daily([D("778", ord_tmd="095000")], DATE, T0)
    assert fast.orders["a-20260305-2"].odno == "778"
    # an order an hour before is another one
    slow = book_with_order("a-20260305-3")
    slow.unknown("a-20260305-3", "dropped", T0)
    slow.on_daily([D("779", ord_tmd="090000")], DATE, T0)
    assert slow.orders["a-20260305-3"].state == "unknown"


def test_a_journal_of_an_older_gateway_gains_the_new_order_fields_and_loads(tmp_path: Path) -> None:
    import sqlite3

    from services.kis_gateway.book import ORDER_FIELDS

    path = tmp_path / "gateway.sqlite"
    book = book_with_order()
    book.accepted("a-20260305-1", "123", "00950", "100001", T0)
    store = GatewayStore(path)
    store.save(book)
    store.close()
    db = sqlite3.connect(path)  # as an older gateway left it: without the last order field
    db.execute(f"ALTER TABLE orders DROP COLUMN {ORDER_FIELDS[-1]}")
    db.commit()
    db.close()
    again = KisBook()
    store = GatewayStore(path)
    store.load(again)
    store.close()
    assert again.orders["a-20260305-1"].odno == "123"
    assert getattr(again.orders["a-20260305-1"], ORDER_FIELDS[-1]) == 0
