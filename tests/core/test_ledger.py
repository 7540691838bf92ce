"""The ledger's arithmetic: a chain of daily openings gives, to the won, the book replayed from every fill."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.ledger import ACCOUNT, Adjustment, Book, FillRow, Holding, LedgerError, apply_day, same_books
from core.portfolio import Portfolio

CODES = ("005930", "000660")


@st.composite
def days_of_fills(draw: st.DrawFn) -> list[list[FillRow]]:
    """Several days of executions of two agents that never sell more than they hold."""
    held = {(a, c): 0 for a in ("a", "b") for c in CODES}
    days = []
    n = 0
    for _ in range(draw(st.integers(1, 6))):
        day = []
        for _ in range(draw(st.integers(0, 8))):
            agent, code = draw(st.sampled_from(("a", "b"))), draw(st.sampled_from(CODES))
            side = draw(st.sampled_from(("buy", "sell"))) if held[(agent, code)] else "buy"
            qty = draw(st.integers(1, 50 if side == "buy" else held[(agent, code)]))
            held[(agent, code)] += qty if side == "buy" else -qty
            price = draw(st.integers(1, 5000)) * 10
            fee = price * qty * 15 // 100_000
            tax = price * qty * 20 // 10_000 if side == "sell" else 0
            n += 1
            day.append(FillRow(f"X{n}", f"{agent}-20260303-{n}", agent, code, side, qty, price, fee, tax))
        days.append(day)
    return days


def _fresh() -> dict[str, Book]:
    return {"a": Book(10_000_000, {"005930": Holding(7, 7 * 60_000)}), "b": Book(5_000_000), ACCOUNT: Book(20_000_000)}


@settings(max_examples=150, deadline=None)
@given(days_of_fills())
def test_the_chain_of_daily_openings_equals_the_book_replayed_from_every_fill(days: list[list[FillRow]]) -> None:
    books = _fresh()
    for day in days:  # each closing becomes the next opening: a copy, as the journal writes and reads it back
        books = {k: Book.from_plain(v.to_plain()) for k, v in apply_day(books, day, ()).items()}
    every_fill = [f for day in days for f in day]
    for agent, start in (("a", {"005930": (7, 60_000)}), ("b", {})):
        replay = Portfolio.rebuild(10_000_000 if agent == "a" else 5_000_000, start, [], [
            _as_fill(f) for f in every_fill if f.agent_id == agent])
        assert replay.cash_won == books[agent].cash_won
        assert replay.realized_pnl_won == books[agent].realized_pnl_won
        for code in CODES:
            pos, h = replay.positions.get(code), books[agent].positions.get(code, Holding())
            assert (pos.qty if pos else 0, pos.cost_won if pos else 0) == (h.qty, h.cost_won)
    assert books[ACCOUNT].cash_won - 20_000_000 == sum(books[a].cash_won for a in "ab") - 15_000_000


def test_an_agent_synced_from_an_opening_equals_the_one_replayed_from_its_first_day() -> None:
    day1 = [FillRow("X1", "a-20260303-1", "a", "005930", "buy", 10, 70_000, 105, 0)]
    day2 = [FillRow("X2", "a-20260304-1", "a", "005930", "sell", 3, 71_000, 31, 426)]
    opening = apply_day(_fresh(), day1, ())["a"]
    synced = Portfolio.rebuild(10_000_000, {"005930": (7, 60_000)}, [], [_as_fill(f) for f in day2],
                               opening=opening.to_plain())
    replayed = Portfolio.rebuild(10_000_000, {"005930": (7, 60_000)}, [], [_as_fill(f) for f in day1 + day2])
    assert synced.snapshot()["positions"]["005930"]["cost_won"] == replayed.snapshot()["positions"]["005930"]["cost_won"]
    assert (synced.cash_won, synced.realized_pnl_won, synced.fees_won, synced.taxes_won) == (
        replayed.cash_won, replayed.realized_pnl_won, replayed.fees_won, replayed.taxes_won)


def test_an_adjustment_moves_the_agent_and_the_account_and_one_that_would_go_negative_is_refused() -> None:
    books = _fresh()
    apply_day(books, (), [Adjustment("adj-1", "a", "005930", 3, 0, 0, "stock dividend", "ops", 1)])
    assert books["a"].qty("005930") == 10 and books["a"].positions["005930"].cost_won == 7 * 60_000
    assert books[ACCOUNT].qty("005930") == 3
    with pytest.raises(LedgerError, match="adj-2"):
        apply_day(books, (), [Adjustment("adj-2", "a", "005930", -11, 0, 0, "transfer out", "ops", 2)])
    out = _fresh()
    out["a"].apply_adjustment("005930", -2, 125_000)
    assert out["a"].qty("005930") == 5 and out["a"].positions["005930"].cost_won == 5 * 60_000
    assert out["a"].cash_won == 10_125_000


def test_a_fill_of_an_order_the_journal_does_not_know_stops_the_day_naming_the_row() -> None:
    fill = FillRow("X9", "a-20260303-9", "a", "005930", "buy", 1, 70_000, 10, 0)
    with pytest.raises(LedgerError, match="fill X9.*not in the journal"):
        apply_day(_fresh(), [fill], (), known_orders={})
    with pytest.raises(LedgerError, match="belongs to b"):
        apply_day(_fresh(), [fill], (), known_orders={"a-20260303-9": "b"})
    with pytest.raises(LedgerError, match="no opening"):
        apply_day(_fresh(), [FillRow("X8", "z-20260303-1", "z", "005930", "buy", 1, 1, 0, 0)], ())


def test_same_books_names_the_difference_and_ignores_flat_codes_without_history() -> None:
    a = {"a": Book(1, {"005930": Holding()})}
    assert same_books(a, {"a": Book(1)}) == []
    assert same_books(a, {"a": Book(2)}) and same_books(a, {})


def _as_fill(f: FillRow) -> object:
    from core.messages import Fill

    return Fill(exec_id=f.exec_id, client_order_id=f.client_order_id, agent_id=f.agent_id, code=f.code, side=f.side,
                qty=f.qty, price=f.price, fee_won=f.fee_won, tax_won=f.tax_won)
