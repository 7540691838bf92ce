"""The ledger in a real journal file: openings, the idempotent roll and its catch-up, adjustments, the archive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.ledger import ACCOUNT, LedgerError
from services.order_manager import archive
from services.order_manager.bookkeeper import AdjustmentRefused, Bookkeeper, BookStart
from services.order_manager.journal import Journal
from services.order_manager.ledger import LedgerStore

FRI, MON, TUE = "20260306", "20260309", "20260310"


@pytest.fixture
def journal(tmp_path: Path) -> Any:
    j = Journal(tmp_path / "journal.sqlite")
    yield j
    j.close()


def books(j: Journal, tmp_path: Path, retention_days: int = 30) -> Bookkeeper:
    return Bookkeeper(j, tmp_path, {"a": BookStart(1_000_000, {"005930": (10, 50_000)}), "b": BookStart(500_000, {})},
                      10_000_000, {"005930", "000660"}, retention_days)


def trade(j: Journal, date: str, n: int, agent: str, side: str, qty: int, price: int, *, ledger_date: str = "",
          order: bool = True) -> None:
    coid = f"{agent}-{date}-{n}"
    if order:
        j.db.execute("INSERT INTO orders (client_order_id, agent_id, trading_date, code, side, order_type, qty, price, "
                     "status, filled_qty, remaining_qty, avg_fill_price, fees_won, taxes_won, broker_order_id, "
                     "reason_code, reason_text, created_ns, updated_ns) VALUES (?, ?, ?, '005930', ?, 'limit', ?, ?, "
                     "'filled', ?, 0, ?, 0, 0, 'B1', '', '', ?, ?)", (coid, agent, date, side, qty, price, qty, price, n, n))
    j.db.execute("INSERT INTO fills (exec_id, client_order_id, agent_id, trading_date, code, side, qty, price, fee_won, "
                 "tax_won, broker_order_id, ts_ns, ledger_date) VALUES (?, ?, ?, ?, '005930', ?, ?, ?, 7, ?, 'B1', ?, ?)",
                 (f"X{date}{n}", coid, agent, date, side, qty, price, 30 if side == "sell" else 0, n, ledger_date or date))


def count(j: Journal, table: str) -> int:
    return j.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_the_ledger_opens_every_book_and_a_roll_carries_the_closing_into_the_next_date(journal: Journal, tmp_path: Path) -> None:
    bk = books(journal, tmp_path)
    bk.open_day(FRI, 1)
    assert journal.ledger.open_date == FRI
    assert set(journal.ledger.opening()) == {"a", "b", ACCOUNT}
    trade(journal, FRI, 1, "a", "buy", 5, 60_000)
    trade(journal, FRI, 2, "a", "sell", 3, 61_000)
    result = bk.close_day(FRI, 2)
    assert result["next_date"] == MON and result["fills"] == 2 and not result["again"]
    mon = journal.ledger.opening(MON)
    assert mon["a"].qty("005930") == 12 and mon[ACCOUNT].qty("005930") == 2
    assert mon["a"].cash_won == 1_000_000 - 5 * 60_000 - 7 + 3 * 61_000 - 7 - 30
    assert mon[ACCOUNT].cash_won - 10_000_000 == mon["a"].cash_won - 1_000_000
    rows = count(journal, "ledger_positions"), count(journal, "ledger_books")
    assert bk.close_day(FRI, 3) is None  # the ledger is open on Monday now: Friday's close rolls nothing again
    assert journal.ledger.roll(FRI, MON, 4)["again"] is True
    assert (count(journal, "ledger_positions"), count(journal, "ledger_books")) == rows
    sync = bk.sync("a")
    assert sync["ledger_date"] == MON and sync["opening"]["positions"]["005930"]["qty"] == 12 and sync["fills"] == []


def test_the_roll_catches_up_every_trading_day_missed_over_a_long_weekend(journal: Journal, tmp_path: Path) -> None:
    bk = books(journal, tmp_path)
    bk.open_day(FRI, 1)
    trade(journal, FRI, 1, "b", "buy", 2, 70_000)
    rolled = bk.open_day(TUE, 2)  # the machine was off from Friday's close to Tuesday
    assert [(r["ledger_date"], r["next_date"]) for r in rolled] == [(FRI, MON), (MON, TUE)]
    assert journal.ledger.dates() == [FRI, MON, TUE]
    assert journal.ledger.opening(TUE)["b"].qty("005930") == 2
    assert journal.ledger.current("b")["b"].qty("005930") == 2


def test_a_crash_in_the_middle_of_a_roll_leaves_nothing_and_the_next_roll_does_it_all(journal: Journal, tmp_path: Path,
                                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    bk = books(journal, tmp_path)
    bk.open_day(FRI, 1)
    trade(journal, FRI, 1, "a", "buy", 1, 60_000)
    real = LedgerStore._write_opening
    calls = []

    def crash_on_second(self: LedgerStore, *args: Any) -> None:
        calls.append(args)
        if len(calls) == 2:
            raise OSError("killed in the middle of the roll")
        real(self, *args)

    monkeypatch.setattr(LedgerStore, "_write_opening", crash_on_second)
    with pytest.raises(OSError):
        journal.ledger.roll(FRI, MON, 2)
    assert journal.ledger.opening(MON) == {} and journal.ledger.rolled(FRI) is None
    monkeypatch.setattr(LedgerStore, "_write_opening", real)
    assert journal.ledger.roll(FRI, MON, 3)["books"] == 3
    assert LedgerStore(journal.db).open_date == MON  # a restarted order manager reads where the ledger stands


def test_a_journal_that_does_not_add_up_stops_the_roll_naming_the_row(journal: Journal, tmp_path: Path) -> None:
    bk = books(journal, tmp_path)
    bk.open_day(FRI, 1)
    trade(journal, FRI, 7, "a", "buy", 1, 60_000, order=False)
    with pytest.raises(LedgerError, match=f"fill X{FRI}7.*not in the journal"):
        bk.close_day(FRI, 2)
    assert journal.ledger.rolled(FRI) is None and journal.ledger.opening(MON) == {}
    journal.db.execute("DELETE FROM fills")
    journal.db.execute("INSERT INTO ledger_books (ledger_date, book, cash_won, created_ns) VALUES (?, 'a', 1, 0)", (MON,))
    with pytest.raises(LedgerError, match=f"opening {MON}.*does not match"):
        journal.ledger.roll(FRI, MON, 3)


def test_a_fill_of_a_rolled_day_counts_on_the_next_and_the_state_is_the_opening_plus_what_followed(
        journal: Journal, tmp_path: Path) -> None:
    bk = books(journal, tmp_path)
    bk.open_day(FRI, 1)
    bk.close_day(FRI, 2)
    trade(journal, FRI, 3, "a", "buy", 4, 60_000, ledger_date=MON)  # a closing-auction notice after the roll
    assert journal.ledger.current("a")["a"].qty("005930") == 14
    assert [f["exec_id"] for f in bk.sync("a")["fills"]] == [f"X{FRI}3"]
    bk.close_day(MON, 3)
    assert journal.ledger.opening(TUE)["a"].qty("005930") == 14


def test_adjustments_are_checked_booked_once_and_seen_by_every_reader(journal: Journal, tmp_path: Path) -> None:
    bk = books(journal, tmp_path)
    bk.open_day(FRI, 1)
    base = {"agent_id": "a", "code": "005930", "qty": 3, "cash_won": -12_345, "reason": "stock dividend", "who": "ops"}
    for bad, why in (({"agent_id": "nobody"}, "unknown agent"), ({"code": "999999"}, "unknown code"),
                     ({"qty": -11}, "would leave -1 shares"), ({"reason": "  "}, "needs a reason"),
                     ({"qty": "3"}, "whole number"), ({"qty": 0, "cash_won": 0}, "changes shares")):
        with pytest.raises(AdjustmentRefused, match=why):
            bk.adjust({**base, **bad}, 2)
    assert count(journal, "ledger_adjustments") == 0
    booked = bk.adjust({**base, "adjustment_id": "adj-1"}, 3)
    assert not booked["duplicate"] and bk.adjust({**base, "adjustment_id": "adj-1"}, 4)["duplicate"]
    assert count(journal, "ledger_adjustments") == 1
    now = journal.ledger.current()
    assert now["a"].qty("005930") == 13 and now["a"].cash_won == 1_000_000 - 12_345
    assert now[ACCOUNT].qty("005930") == 3 and now[ACCOUNT].cash_won == 10_000_000 - 12_345
    assert [a["adjustment_id"] for a in bk.sync("a")["adjustments"]] == ["adj-1"]
    state = bk.journal_state(FRI)
    assert state["positions"] == {"005930": 3} and state["agents"]["a"]["positions"] == {"005930": 13}
    bk.close_day(FRI, 5)
    assert journal.ledger.opening(MON)["a"].qty("005930") == 13 and bk.sync("a")["adjustments"] == []


def test_retention_archives_old_days_and_orders_of_any_date_read_journal_and_archive_alike(
        journal: Journal, tmp_path: Path) -> None:
    bk = books(journal, tmp_path, retention_days=3)
    bk.open_day(FRI, 1)
    trade(journal, FRI, 1, "a", "buy", 1, 60_000)
    trade(journal, FRI, 2, "b", "buy", 2, 61_000)
    bk.close_day(FRI, 2)
    bk.close_day(MON, 3)
    trade(journal, TUE, 1, "a", "sell", 1, 62_000)
    result = bk.close_day(TUE, 4)  # Tuesday - 3 days: Friday is archived
    assert result["archived"] == {FRI: {"orders": 2, "fills": 2}}
    assert (tmp_path / "archive" / FRI / "orders.parquet").exists()
    assert journal.db.execute("SELECT count(*) FROM orders WHERE trading_date = ?", (FRI,)).fetchone()[0] == 0
    assert [o["client_order_id"] for o in bk.orders(agent_id="a", since=FRI, until="99999999", open_only=False)] == [
        f"a-{FRI}-1", f"a-{TUE}-1"]
    assert [o["client_order_id"] for o in bk.orders(agent_id=None, since=FRI, until=FRI, open_only=False)] == [
        f"a-{FRI}-1", f"b-{FRI}-2"]
    assert [f["exec_id"] for f in archive.read_fills(tmp_path, since=FRI, until=FRI, agent_id="b")] == [f"X{FRI}2"]
    assert journal.ledger.opening(FRI)  # openings are never archived
    assert journal.ledger.current("a")["a"].qty("005930") == 10  # 10 + 1 - 1


def test_an_archive_written_again_merges_with_what_it_holds(journal: Journal, tmp_path: Path) -> None:
    trade(journal, FRI, 1, "a", "buy", 1, 60_000)
    assert archive.archive_day(journal.db, tmp_path, FRI) == {"orders": 1, "fills": 1}
    trade(journal, FRI, 2, "a", "buy", 1, 60_000)
    archive.archive_day(journal.db, tmp_path, FRI)
    assert sorted(o["client_order_id"] for o in archive.read_orders(tmp_path, since=FRI, until=FRI)) == [
        f"a-{FRI}-1", f"a-{FRI}-2"]
