"""The whole stack trading a simulated afternoon through the KIS gateway and the local kis-sim.

Every Procfile process ``broker.kind = "kis"`` starts (kis-sim and the gateway
instead of the paper exchange), the default roster, kis-sim's clock fast. The
firm's journal, the gateway's and kis-sim's own record must agree on every
order and fill, and the reconciler must find the account clean.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.config import PROJECT_ROOT
from tests.test_stack import Stack, free_port, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kis_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("kis-stack")
    rest, ws = free_port(), free_port()
    env = {
        **os.environ,
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONUNBUFFERED": "1",
        "TRADER_RUN_DIR": str(run_dir),
        "TRADER_BROKER__KIND": "kis",
        "TRADER_BROKER__KIS__REST_URL": f"http://127.0.0.1:{rest}",
        "TRADER_BROKER__KIS__WS_URL": f"ws://127.0.0.1:{ws}",
        "TRADER_BROKER__KIS__SIM_SPEED": "300",
        "TRADER_BROKER__KIS__RATE_PER_S": "200",
        "TRADER_CLOCK__START_DATE": "2026-03-03",
        "TRADER_CLOCK__START_TIME": "13:30",
        "TRADER_DASHBOARD__PORT": str(free_port()),
        "TRADER_RECONCILE__INTERVAL_S": "5",
        "TRADER_SUPERVISOR__KILL_TIMEOUT_S": "4",
    }
    s = Stack(run_dir, env)
    s.rest_url = f"http://127.0.0.1:{rest}"  # type: ignore[attr-defined]
    try:
        s.start()
        yield s
    finally:
        s.kill_everything()


def _sim_status(stack: Stack) -> dict:
    try:
        return httpx.get(f"{stack.rest_url}/kis-sim/status", timeout=2).json()  # type: ignore[attr-defined]
    except (httpx.HTTPError, ValueError):
        return {}


@pytest.mark.timeout(400)
def test_the_default_roster_trades_a_day_through_the_gateway_and_every_record_agrees(kis_stack: Stack) -> None:
    rows = wait_for(lambda: (r := kis_stack.ps()) and r.get("kis-gateway", {}).get("state") == "running" and r, 60,
                    "the gateway running")
    assert "exchange" not in rows or rows["exchange"].get("state") != "running"
    first = wait_for(lambda: _sim_status(kis_stack).get("trading_date"), 30, "kis-sim's clock")
    wait_for(lambda: (st := _sim_status(kis_stack)).get("session") == "closed" or st.get("trading_date", first) != first,
             240, "kis-sim's day to close")
    wait_for(lambda: kis_stack.journal("SELECT exec_id, qty FROM fills"), 30, "fills in the journal")

    def gateway_books() -> tuple[dict[str, int], dict[str, str]]:
        gateway = sqlite3.connect(kis_stack.run_dir / "kis-gateway" / "gateway.sqlite")
        try:
            return (dict(gateway.execute("SELECT exec_id, qty FROM fills").fetchall()),
                    {c: o for c, o in gateway.execute("SELECT client_order_id, odno FROM orders").fetchall()})
        finally:
            gateway.close()

    # the closing auction's executions reach the journal a moment after the gateway books them: wait for the
    # journal to hold every execution the gateway has (a lost one times out here, naming the difference)
    agreed = wait_for(lambda: (f := dict(kis_stack.journal("SELECT exec_id, qty FROM fills"))) == (g := gateway_books())[0]
                      and (f, g), 30, "the journal to hold every execution the gateway booked")
    fills, (gw_fills, gw_orders) = agreed
    orders = kis_stack.journal("SELECT client_order_id, status, broker_order_id FROM orders")
    assert len(orders) >= 3, orders
    assert fills == gw_fills  # one fill per execution, the same ids on both sides
    for coid, status, odno in orders:
        if odno:
            assert gw_orders.get(coid) == odno
    # kis-sim's own count of orders of the day: every accepted firm order, no more
    accepted = [o for o in orders if o[2]]
    assert _sim_status(kis_stack)["orders_today"] == len({o[2] for o in accepted}) + _cancel_orders(kis_stack)
    report = wait_for(lambda: (r := kis_stack.trader("recon", "--json")) and r.returncode == 0 and r, 60,
                      "a clean reconciliation")
    assert report.returncode == 0


def _cancel_orders(stack: Stack) -> int:
    db = sqlite3.connect(stack.run_dir / "kis-gateway" / "gateway.sqlite")
    try:
        return db.execute("SELECT count(*) FROM cancels").fetchone()[0]
    finally:
        db.close()


def test_the_stack_goes_down_leaving_no_process_and_no_lock(kis_stack: Stack) -> None:
    out = kis_stack.trader("down", timeout=90)
    assert out.returncode == 0, out.stderr
    assert not list((kis_stack.run_dir / "run").glob("*.pid"))
    assert PROJECT_ROOT.exists()
