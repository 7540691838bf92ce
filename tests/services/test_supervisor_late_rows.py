"""Rows of a day that reach the journal after its daily report make the report stale; rolling again fixes it.

The case seen in the chaos run: the close is rolled, then an agent's order
dated that day is refused MARKET_CLOSED (or the broker, restarted from an
older state, fills one more order of the day) and is journaled after the
report was written. The supervisor must find such a report and rewrite it,
valued at the day's recorded closing prices, so that the report always ends
up counting what the journal holds.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from bus.rpc import RpcClient
from core.config import PROJECT_ROOT
from core.messages import AlertLevel, Side
from core.orders import OrderBook
from services.market_data.recorder import columns_to_table, write_table
from services.order_manager.journal import Journal
from services.supervisor import dayroll
from services.supervisor.journal import DayJournal
from services.supervisor.report import ACCOUNT, AgentStart

DAY = "20260304"
NEXT_DAY = "20260305"
AGENT = "sma-samsung"
CODE = "005930"
STARTS = {AGENT: AgentStart(100_000_000, {})}


class OrderManagerDay:
    """The order manager's book and journal for one day, as the real one writes them."""

    def __init__(self, run_dir: Path) -> None:
        self.book = OrderBook()
        self.journal = Journal(run_dir / "journal.sqlite")
        self.n = 0
        self.t = 1

    def _write(self, outs: list, date: str = DAY) -> None:
        self.journal.write(outs, self.book.orders, date)

    def buy_filled(self, qty: int, price: int, fee: int) -> str:
        self.n += 1
        coid = f"{AGENT}-{DAY}-{self.n}"
        outs = [self.book.submit(coid, AGENT, CODE, Side.BUY, qty, price, self.t)]
        outs.append(self.book.ack(coid, f"B{self.n}", self.t + 1))
        outs.append(self.book.apply_fill(f"E{self.n}", qty, price, self.t + 2, coid, f"B{self.n}", fee, 0))
        self.t += 3
        self._write(outs)
        return coid

    def accepted(self, qty: int, price: int) -> str:
        self.n += 1
        coid = f"{AGENT}-{DAY}-{self.n}"
        outs = [self.book.submit(coid, AGENT, CODE, Side.BUY, qty, price, self.t),
                self.book.ack(coid, f"B{self.n}", self.t + 1)]
        self.t += 2
        self._write(outs)
        return coid

    def refused_after_close(self) -> str:
        self.n += 1
        coid = f"{AGENT}-{DAY}-{self.n}"
        outs = [self.book.submit(coid, AGENT, CODE, Side.SELL, 10, 71_000, self.t),
                self.book.reject(coid, "MARKET_CLOSED", "the market takes no orders in the closed phase", self.t + 1)]
        self.t += 2
        self._write(outs)
        return coid

    def expire_open(self) -> None:
        self._write([self.book.expire_open(self.t)])
        self.t += 1

    def close(self) -> None:
        self.journal.close()


@pytest.fixture()
def nobody(tmp_path: Path) -> Iterator[tuple[RpcClient, RpcClient]]:
    """Order manager and market data clients nobody answers: a late roll must need neither."""
    ctx = zmq.Context()
    oms = RpcClient(ctx, f"ipc://{tmp_path}/nobody-oms.sock", timeout_ms=100, retries=0)
    md = RpcClient(ctx, f"ipc://{tmp_path}/nobody-md.sock", timeout_ms=100, retries=0)
    try:
        yield oms, md
    finally:
        oms.close()
        md.close()
        ctx.destroy(linger=0)


def roll(tmp_path: Path, journal: DayJournal, clients: tuple[RpcClient, RpcClient], *, late: bool = True) -> dict:
    alerts: list[tuple[AlertLevel, str, str]] = []
    summary = dayroll.run_day_roll(DAY, tmp_path, journal, clients[0], clients[1], STARTS, 30,
                                   lambda *a: alerts.append(a), late=late)
    assert not [a for a in alerts if a[1] == "orders_unchecked"]
    return summary


def account(journal: DayJournal) -> dict:
    (row,) = [r for r in journal.report(DAY) if r["agent_id"] == ACCOUNT]
    return row


def test_an_order_refused_after_the_close_makes_the_report_stale_until_the_day_is_rolled_again(
        tmp_path: Path, nobody: tuple[RpcClient, RpcClient]) -> None:
    oms = OrderManagerDay(tmp_path)
    oms.buy_filled(100, 70_000, fee=1_050)
    oms.buy_filled(50, 70_100, fee=526)
    day_journal = DayJournal(tmp_path)
    try:
        roll(tmp_path, day_journal, nobody)
        assert account(day_journal)["orders"] == 2
        assert day_journal.stale_reports() == []

        oms.refused_after_close()  # journaled after the report, dated the closed day
        assert day_journal.stale_reports() == [DAY]

        roll(tmp_path, day_journal, nobody)
        row = account(day_journal)
        assert (row["orders"], row["fills"], row["fees_won"]) == (3, 2, 1_576)
        assert day_journal.stale_reports() == []
        csv_lines = (tmp_path / "reports" / f"{DAY}.csv").read_text().splitlines()
        assert any(line.startswith(f"{DAY},{ACCOUNT},3,2,") for line in csv_lines)
    finally:
        day_journal.close()
        oms.close()


def test_an_order_that_closes_late_or_a_late_fill_makes_the_report_stale(
        tmp_path: Path, nobody: tuple[RpcClient, RpcClient]) -> None:
    oms = OrderManagerDay(tmp_path)
    oms.buy_filled(100, 70_000, fee=1_050)
    oms.accepted(10, 69_000)
    day_journal = DayJournal(tmp_path)
    try:
        roll(tmp_path, day_journal, nobody)
        assert account(day_journal)["open_orders"] == 1
        oms.expire_open()  # the order manager's own roll came after the report
        assert day_journal.stale_reports() == [DAY]
        roll(tmp_path, day_journal, nobody)
        assert account(day_journal)["open_orders"] == 0 and day_journal.stale_reports() == []

        oms.buy_filled(5, 70_200, fee=53)  # an order of the day filled after the report (a reopened day)
        assert day_journal.stale_reports() == [DAY]
        roll(tmp_path, day_journal, nobody)
        row = account(day_journal)
        assert (row["orders"], row["fills"], row["bought_qty"]) == (3, 2, 105)
        assert day_journal.stale_reports() == []
    finally:
        day_journal.close()
        oms.close()


def test_rolling_an_unchanged_day_again_writes_the_same_report_valued_at_the_recorded_close(
        tmp_path: Path, nobody: tuple[RpcClient, RpcClient]) -> None:
    oms = OrderManagerDay(tmp_path)
    oms.buy_filled(100, 70_000, fee=1_050)
    closes = np.array([70_500, 71_000, 71_200], dtype=np.int64)
    write_table(tmp_path / "bars", DAY, CODE, columns_to_table(CODE, {
        "ts_ns": np.array([1, 2, 3], dtype=np.int64) * 60_000_000_000, "open": closes, "high": closes,
        "low": closes, "close": closes, "volume": np.array([10, 10, 10], dtype=np.int64)}))
    assert dayroll.recorded_closes(tmp_path / "bars" / DAY, [CODE, "000660"]) == {CODE: 71_200}
    day_journal = DayJournal(tmp_path)
    try:
        roll(tmp_path, day_journal, nobody)
        first = day_journal.report(DAY)
        (agent_row,) = [r for r in first if r["agent_id"] == AGENT]
        assert agent_row["unrealized_pnl_won"] == (71_200 - 70_000) * 100
        roll(tmp_path, day_journal, nobody)
        assert day_journal.report(DAY) == first
    finally:
        day_journal.close()
        oms.close()


def test_a_day_whose_rows_were_purged_or_a_day_of_no_report_is_not_stale(
        tmp_path: Path, nobody: tuple[RpcClient, RpcClient]) -> None:
    oms = OrderManagerDay(tmp_path)
    oms.buy_filled(100, 70_000, fee=1_050)
    day_journal = DayJournal(tmp_path)
    try:
        assert day_journal.stale_reports() == []  # orders, no report yet: that is a missed close, not a stale report
        roll(tmp_path, day_journal, nobody)
        oms.journal.purge_before(NEXT_DAY)
        assert day_journal.stale_reports() == []
    finally:
        day_journal.close()
        oms.close()


def reported_orders(run_dir: Path) -> int | None:
    """The ACCOUNT row's order count of DAY in the journal (None before there is one)."""
    db = sqlite3.connect(f"file:{run_dir / 'journal.sqlite'}?mode=ro", uri=True, timeout=5)
    try:
        row = db.execute("SELECT orders FROM daily_reports WHERE trading_date = ? AND agent_id = ?",
                         (DAY, ACCOUNT)).fetchone()
    finally:
        db.close()
    return None if row is None else int(row[0])


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str,
               proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``condition`` until true; fail naming ``what`` (with the supervisor's log) at the deadline or its exit."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen (supervisor exit code {proc.poll()})\n"
                                 f"{log.read_text(errors='replace')[-3000:] if log.exists() else ''}")
        time.sleep(0.1)


def test_the_running_supervisor_rewrites_a_report_when_rows_of_its_day_arrive_late(
        tmp_path: Path, nobody: tuple[RpcClient, RpcClient]) -> None:
    oms = OrderManagerDay(tmp_path)
    oms.buy_filled(100, 70_000, fee=1_050)
    oms.buy_filled(50, 70_100, fee=526)
    day_journal = DayJournal(tmp_path)
    roll(tmp_path, day_journal, nobody)  # the report at the close: 2 orders
    day_journal.close()
    oms.refused_after_close()  # one more while the supervisor was down: stale before it starts
    roster = tmp_path / "agents.toml"
    roster.write_text("# no agents\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADER_")}
    env.update({"TRADER_RUN_DIR": str(tmp_path), "TRADER_ROSTER_FILE": str(roster),
                "TRADER_BUS__RPC_TIMEOUT_MS": "200"})
    log = tmp_path / "supervisor.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "services.supervisor"], cwd=PROJECT_ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: reported_orders(tmp_path) == 3, 30, "the report rewritten at start-up (3 orders)", proc, log)
        oms.refused_after_close()  # and one more while it runs
        wait_until(lambda: reported_orders(tmp_path) == 4, 30, "the report rewritten while running (4 orders)",
                   proc, log)
        assert proc.poll() is None
    finally:
        oms.close()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
