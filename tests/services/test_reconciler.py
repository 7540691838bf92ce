"""The reconciler against real processes: bus, paper exchange, market data, order manager, risk guard, reconciler."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from bus.rpc import RpcClient
from core.config import PROJECT_ROOT
from core.messages import Command, CommandResult, OrderRequest, OrderStatus, Side
from tests.services.test_order_manager import Stack, accepting, wait_for

CODE = "000660"


class ReconStack(Stack):
    """The order manager's stack plus the reconciler (agents' books off: no agent runs here)."""

    MODULES = {**Stack.MODULES, "reconciler": "services.reconciler"}

    def __init__(self, run_dir: Any) -> None:
        super().__init__(run_dir, {"TRADER_RECONCILE__AGENT_BOOKS": "false", "TRADER_RECONCILE__INTERVAL_S": "3600"})
        self.recon = RpcClient(self.ctx, self.settings.endpoint("reconciler_rpc"), timeout_ms=15_000, retries=0)
        self.guard = RpcClient(self.ctx, self.settings.endpoint("risk_guard_rpc"), timeout_ms=3000, retries=0)

    def call(self, client: RpcClient, name: str, **args: Any) -> Any:
        reply = client.call(Command(command_id=uuid.uuid4().hex, name=name, args=args))
        assert isinstance(reply, CommandResult) and reply.ok, reply
        return reply.result

    def close(self) -> None:
        self.recon.close()
        self.guard.close()
        super().close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReconStack]:
    s = ReconStack(tmp_path_factory.mktemp("recon"))
    try:
        for name in ReconStack.MODULES:
            s.start(name)
        wait_for(lambda: accepting(s), 60, "the order manager to connect to the exchange")
        wait_for(lambda: s.order(s.resting_price()).status is OrderStatus.ACCEPTED, 30, "a first accepted order")
        yield s
    finally:
        s.close()


def test_agreeing_books_reconcile_clean_and_the_report_is_journaled(stack: ReconStack) -> None:
    report = stack.call(stack.recon, "run")
    assert report["clean"], report
    assert report["differences"] == [] and not report["halted"]
    rows = stack.journal_rows("SELECT report_id, clean FROM recon_reports WHERE report_id = ?", report["report_id"])
    assert rows == [(report["report_id"], 1)]
    assert stack.call(stack.recon, "latest")["report_id"] == report["report_id"]


def test_cli_recon_exits_zero_when_clean(stack: ReconStack) -> None:
    done = subprocess.run([sys.executable, "-m", "services.cli.main", "recon", "--json"], cwd=PROJECT_ROOT,
                          env=stack.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_unknown_open_order_at_the_broker_raises_an_alert_and_a_halt(stack: ReconStack) -> None:
    stranger = OrderRequest(client_order_id=f"ghost-{stack.trading_date}-1", agent_id="ghost", code=CODE,
                            side=Side.BUY, qty=1, price=stack.resting_price())
    assert stack.exchange.place(stranger).status is OrderStatus.ACCEPTED  # straight to the broker, past the OMS
    report = stack.call(stack.recon, "run")
    kinds = {(d["kind"], d["action"], d["key"]) for d in report["differences"]}
    assert ("UNKNOWN_OPEN_ORDER_AT_BROKER", "HALT", stranger.client_order_id) in kinds
    assert report["halted"]
    status = stack.call(stack.guard, "status")
    assert status["state"] == "HALTED" and status["who"] == "reconciler"
    done = subprocess.run([sys.executable, "-m", "services.cli.main", "recon", "--json"], cwd=PROJECT_ROOT,
                          env=stack.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "UNKNOWN_OPEN_ORDER_AT_BROKER" in done.stdout
