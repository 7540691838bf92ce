"""The book of record across a day roll, with real processes: bus, exchange, market data, risk guard, order manager,
reconciler, and the ``trader`` command line.

The paper clock starts a few market minutes before the close at x60, so the
first day closes, the ledger rolls and the second day opens within a minute.
Then: holdings carried overnight reconcile clean, a restarted risk guard sees
them, a phantom change of the broker's account is a break (alerted once, halts
once, shown until booked), the adjustment that explains it settles it, and bad
adjustments change nothing.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from bus.pubsub import Subscriber
from bus.rpc import RpcClient
from core.config import PROJECT_ROOT
from core.messages import Alert, Command, CommandResult, OrderStatus, Side
from tests.services.test_order_manager import AGENT, CODE, Stack, accepting, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


class LedgerStack(Stack):
    MODULES = {**Stack.MODULES, "reconciler": "services.reconciler"}

    def __init__(self, run_dir: Any) -> None:
        super().__init__(run_dir, {"TRADER_RECONCILE__AGENT_BOOKS": "false", "TRADER_RECONCILE__INTERVAL_S": "3600",
                                   "TRADER_CLOCK__START_TIME": "15:15", "TRADER_CLOCK__SPEED": "60"})
        self.recon = RpcClient(self.ctx, self.settings.endpoint("reconciler_rpc"), timeout_ms=15_000, retries=0)
        self.guard = RpcClient(self.ctx, self.settings.endpoint("risk_guard_rpc"), timeout_ms=3000, retries=0)

    def ask(self, client: RpcClient, name: str, **args: Any) -> Any:
        reply = client.call(Command(command_id=uuid.uuid4().hex, name=name, args=args))
        assert isinstance(reply, CommandResult) and reply.ok, reply
        return reply.result

    def trader(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "services.cli.main", *args], cwd=PROJECT_ROOT, env=self.env,
                              capture_output=True, text=True, timeout=60)

    def close(self) -> None:
        self.recon.close()
        self.guard.close()
        super().close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LedgerStack]:
    s = LedgerStack(tmp_path_factory.mktemp("ledger"))
    try:
        for name in LedgerStack.MODULES:
            s.start(name)
        wait_for(lambda: accepting(s), 60, "the order manager to connect to the exchange")
        wait_for(lambda: _guard_consistent(s), 60, "the risk guard's view")
        yield s
    finally:
        s.close()


def test_books_carried_overnight_reconcile_clean_and_a_phantom_change_is_a_break_until_booked(stack: LedgerStack) -> None:
    day1 = stack.trading_date
    bought = stack.order(stack.crossing_price(), qty=5)
    assert bought.status is OrderStatus.ACCEPTED, bought
    wait_for(lambda: stack.journal_rows("SELECT count(*) FROM fills")[0][0] >= 1, 30, "the buy to fill")
    filled = stack.journal_rows("SELECT sum(qty) FROM fills WHERE agent_id = ?", AGENT)[0][0]

    # the close: the ledger rolls day 1 into the next trading date, and the market opens it
    wait_for(lambda: (st := stack.status()) and st["ledger_date"] > day1 and st["trading_date"] > day1, 150,
             "the day roll and the next day")
    day2 = stack.trading_date
    assert stack.journal_rows("SELECT next_date FROM ledger_rolls WHERE ledger_date = ?", day1) == [(day2,)]
    ledger_day = stack.command("ledger_day", date=day1)
    assert ledger_day["closing"][AGENT]["positions"][CODE]["qty"] == filled
    sync = stack.command("sync", agent_id=AGENT)
    assert sync["ledger_date"] == day2 and sync["opening"]["positions"][CODE]["qty"] == filled and sync["fills"] == []

    report = stack.ask(stack.recon, "run")
    assert report["clean"] and report["breaks"] == [] and report["pending"] == [], report

    # a risk guard started on day 2 sees the holding bought on day 1
    stack.stop("risk-guard")
    stack.start("risk-guard")
    wait_for(lambda: _guard_consistent(stack), 60, "the restarted risk guard's view")
    usage = stack.ask(stack.guard, "status")["usage"][AGENT]
    assert usage["positions"].get(CODE) == filled

    # the broker's account changes without a fill: a break, alerted once, halting once, shown until booked
    alerts = Subscriber(stack.ctx, stack.settings.endpoint("bus_out"), ["sys.alert"])
    try:
        stack.exchange.fault(kind="phantom", code=CODE, qty=3, cash_won=-12_345)
        first = stack.ask(stack.recon, "run")
        kinds = {(b["kind"], b["key"]) for b in first["breaks"]}
        assert ("POSITION_DIFFERENCE", CODE) in kinds and ("CASH_DIFFERENCE", "cash") in kinds, first
        assert first["halted"] and not first["clean"]
        assert stack.ask(stack.guard, "status")["state"] == "HALTED"
        second = stack.ask(stack.recon, "run")
        assert {(b["kind"], b["key"]) for b in second["breaks"]} == kinds and not second["halted"]
        assert stack.trader("recon", "--json").returncode == 1

        # bad adjustments are refused and change nothing
        for bad in (["nobody", CODE, "--qty", "3", "--reason", "x"], [AGENT, "999999", "--qty", "3", "--reason", "x"],
                    [AGENT, CODE, "--qty", str(-(filled + 10)), "--reason", "x"], [AGENT, CODE, "--qty", "3"]):
            done = stack.trader("ledger", "adjust", *bad)
            assert done.returncode != 0, (bad, done.stdout)
        assert stack.journal_rows("SELECT count(*) FROM ledger_adjustments")[0][0] == 0

        done = stack.trader("ledger", "adjust", AGENT, CODE, "--qty", "3", "--cash-won", "-12345",
                            "--reason", "broker shows 3 shares and 12,345 won less: stock dividend net of a fee",
                            "--json")
        assert done.returncode == 0, done.stderr
        booked = json.loads(done.stdout)
        assert booked["who"].startswith("cli:") and booked["ledger_date"] == day2
        settled = stack.ask(stack.recon, "run")
        assert settled["clean"] and settled["breaks"] == [], settled
        assert stack.trader("recon").returncode == 0
        seen = [env.msg for env in alerts.drain()]
        assert [a.kind for a in seen if isinstance(a, Alert)].count("recon_break") == 2  # position and cash, once each
        assert any(isinstance(a, Alert) and a.kind == "recon_break_resolved" for a in seen)
    finally:
        alerts.close()

    positions = json.loads(stack.trader("positions", "--json").stdout)
    assert positions["agents"][AGENT]["positions"][CODE]["qty"] == filled + 3
    assert positions["agents"][AGENT]["adjustments"][0]["adjustment_id"] == booked["adjustment_id"]
    orders = json.loads(stack.trader("orders", "--date", day1, "--agent", AGENT, "--json").stdout)
    assert bought.client_order_id in {o["client_order_id"] for o in orders}
    assert stack.trader("orders", "--date", "2026-13").returncode == 2

    # trading resumes once the operator says so
    stack.ask(stack.guard, "resume", who="test", why="phantom booked")
    sold = stack.order(stack.crossing_price(), qty=filled + 3, side=Side.SELL)  # above the last: it rests
    assert sold.status is OrderStatus.ACCEPTED, sold  # the whole holding, overnight and adjusted shares included


def _guard_consistent(stack: LedgerStack) -> bool:
    try:
        return bool(stack.ask(stack.guard, "status")["consistent"])
    except Exception:
        stack.guard.close()
        return False


@contextlib.contextmanager
def back_office(tmp_path_factory: pytest.TempPathFactory, name: str, start_time: str, *,
                ready: bool = True) -> Iterator[LedgerStack]:
    """Bus, exchange, market data, risk guard and order manager from ``start_time`` (market time); all stopped after.

    ``ready``: wait until the order manager takes orders and the risk guard's view is consistent.
    """
    s = LedgerStack(tmp_path_factory.mktemp(name))
    s.env["TRADER_CLOCK__START_TIME"] = start_time
    try:
        for process in ("bus", "exchange", "market-data", "risk-guard", "order-manager"):
            s.start(process)
        if ready:
            wait_for(lambda: accepting(s), 60, "the order manager to connect to the exchange")
            wait_for(lambda: _guard_consistent(s), 60, "the risk guard's view")
        yield s
    finally:
        s.close()


def test_a_roll_that_finds_a_fill_of_an_unknown_order_halts_the_firm_and_names_the_row(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    with back_office(tmp_path_factory, "ledger-bad", "15:27", ready=False) as s:
        alerts = Subscriber(s.ctx, s.settings.endpoint("bus_out"), ["sys.alert"])
        try:
            wait_for(lambda: (st := s.status()) and st["ledger_date"], 60, "the ledger to open")
            day = s.status()["trading_date"]
            db = sqlite3.connect(s.run_dir / "journal.sqlite", timeout=10)
            with db:
                db.execute("INSERT INTO fills (exec_id, client_order_id, agent_id, trading_date, code, side, qty, price, "
                           "fee_won, tax_won, broker_order_id, ts_ns, ledger_date) VALUES ('XBOGUS', ?, ?, ?, ?, 'buy', "
                           "1, 1000, 0, 0, 'B0', 1, ?)", (f"{AGENT}-{day}-999", AGENT, day, CODE, day))
            db.close()
            seen: list[Any] = []

            def alerted() -> bool:
                seen.extend(env.msg for env in alerts.drain())
                return any(isinstance(a, Alert) and a.kind == "ledger_inconsistent" for a in seen)

            wait_for(alerted, 90, "the ledger_inconsistent alert at the close")
            text = next(a.text for a in seen if isinstance(a, Alert) and a.kind == "ledger_inconsistent")
            assert "XBOGUS" in text and "not in the journal" in text
            status = s.ask(s.guard, "status")
            assert status["state"] == "HALTED" and status["who"] == "ledger"
            assert s.journal_rows("SELECT count(*) FROM ledger_rolls")[0][0] == 0  # nothing guessed, nothing rolled
            assert "XBOGUS" in s.status()["ledger_problem"]
        finally:
            alerts.close()


def test_a_day_roll_whose_records_the_broker_refuses_waits_for_them_and_the_order_manager_lives_on(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    with back_office(tmp_path_factory, "ledger-refused", "15:27") as s:
        resting = s.order(s.resting_price())
        assert resting.status is OrderStatus.ACCEPTED, resting
        day = s.trading_date
        # the broker's records cannot be read over the close (as KIS without a token for a minute)
        s.exchange.fault(kind="refuse_queries", seconds=600)
        log = s.run_dir / "logs" / "order-manager.log"
        wait_for(lambda: f"the roll of {day} waits" in log.read_text(), 60, "the roll to wait for the broker")
        oms = s.procs["order-manager"]
        assert oms.poll() is None, log.read_text()[-2000:]
        status = s.journal_rows("SELECT status FROM orders WHERE client_order_id = ?", resting.client_order_id)
        assert status == [("accepted",)]  # not expired before the broker's last word on it
        assert s.journal_rows("SELECT count(*) FROM ledger_rolls")[0][0] == 0
        s.exchange.fault(kind="clear")
        wait_for(lambda: s.journal_rows("SELECT status FROM orders WHERE client_order_id = ?",
                                        resting.client_order_id) == [("expired",)], 60, "the order to expire")
        assert s.journal_rows("SELECT next_date FROM ledger_rolls WHERE ledger_date = ?", day)
        assert oms.poll() is None and "Traceback" not in log.read_text()
