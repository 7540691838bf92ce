"""The order manager against real processes: bus proxy, paper exchange, market data, risk guard, OMS.

One stack per module (the exchange takes seconds to simulate its day); the tests
run in file order and the last ones kill processes on purpose.
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
from typing import Any

import pytest
import zmq

from bus.pubsub import Subscriber
from bus.rpc import RpcClient
from core import krx
from core.config import PROJECT_ROOT, load_stack
from core.messages import CancelRequest, Command, Fill, OrderEvent, OrderRequest, OrderStatus, Side
from services.broker.venue import VenueBroker
from services.order_manager.entry import parse_client_order_id

AGENT = "foreign-hynix"
CODE = "000660"
GENEROUS_RISK = """
blocked_codes = []
[order]
max_qty = 100000
max_notional_won = 1000000000
fat_finger_pct = 29.0
fee_reserve_ppm = 150
[position]
max_qty_per_agent = 10000000
max_notional_per_agent_won = 100000000000
max_qty_per_code = 10000000
[open_orders]
max_per_agent = 100000
[rate]
window_s = 1.0
max_per_agent = 100000
max_account = 100000
[loss]
daily_loss_limit_agent_won = 1000000000
daily_loss_limit_account_won = 1000000000
agent_breach_state = "REDUCING"
account_breach_state = "HALTED"
"""


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll until ``condition()`` is truthy; fail naming ``what`` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


class Stack:
    """The processes of one test run, started with a private run directory."""

    MODULES = {"bus": "bus.proxy", "exchange": "services.exchange", "market-data": "services.market_data",
               "risk-guard": "services.risk_guard", "order-manager": "services.order_manager"}

    def __init__(self, run_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.run_dir = run_dir
        risk_file = run_dir / "risk.toml"
        risk_file.write_text(GENEROUS_RISK)
        self.env = {**os.environ, "TRADER_RUN_DIR": str(run_dir), "TRADER_CLOCK__START_TIME": "08:59",
                    "TRADER_CLOCK__SPEED": "20", "TRADER_RISK_FILE": str(risk_file), **(extra_env or {})}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        os.environ["TRADER_RUN_DIR"] = str(run_dir)
        self.settings = load_stack()
        self.ctx = zmq.Context()
        self.oms = RpcClient(self.ctx, self.settings.endpoint("order_manager_rpc"), timeout_ms=5000, retries=0)
        self.exchange = VenueBroker(self.ctx, self.settings, timeout_ms=3000, retries=0)
        self._n = 0

    def start(self, name: str) -> None:
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        log = open(self.run_dir / "logs" / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", self.MODULES[name]], cwd=PROJECT_ROOT,
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def close(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)
        self.oms.close()
        self.exchange.close()
        self.ctx.destroy(linger=0)

    def command(self, name: str, **args: Any) -> Any:
        self._n += 1
        reply = self.oms.call(Command(command_id=f"t{self._n}", name=name, args=args))
        assert reply.ok, reply
        return reply.result

    def status(self) -> dict[str, Any] | None:
        try:
            return self.command("status")
        except Exception:
            self.oms.close()
            return None

    def next_id(self, agent: str = AGENT) -> str:
        self._n += 1
        return f"{agent}-{self.trading_date}-{self._n}"

    @property
    def trading_date(self) -> str:
        return self.status()["trading_date"]  # type: ignore[index]

    def order(self, price: int, qty: int = 1, side: Side = Side.BUY, coid: str | None = None,
              agent: str = AGENT, code: str = CODE) -> OrderEvent:
        req = OrderRequest(client_order_id=coid or self.next_id(agent), agent_id=agent, code=code, side=side,
                           qty=qty, price=price)
        reply = self.oms.call(req)
        assert isinstance(reply, OrderEvent), reply
        return reply

    def resting_price(self) -> int:
        q = self.exchange.quote(CODE)
        return krx.round_to_tick(q["last"] * 0.9, "up")

    def crossing_price(self) -> int:
        q = self.exchange.quote(CODE)
        return krx.round_to_tick(q["last"] * 1.03, "down")

    def journal_rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(self.run_dir / "journal.sqlite")
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()


def accepting(stack: Stack) -> bool:
    st = stack.status()
    return bool(st and st["accepting"])


def running_stack(run_dir: Path) -> Iterator[Stack]:
    """Bus, exchange, market data, risk guard and order manager, ready for orders; all stopped at the end."""
    previous = os.environ.get("TRADER_RUN_DIR")
    s = Stack(run_dir)
    try:
        for name in Stack.MODULES:
            s.start(name)
        wait_for(lambda: accepting(s), 60, "the order manager to connect to the exchange")
        wait_for(lambda: s.order(s.resting_price()).status is OrderStatus.ACCEPTED, 30,
                 "the risk guard to approve a first order")
        yield s
    finally:
        s.close()
        if previous is None:
            os.environ.pop("TRADER_RUN_DIR", None)
        else:
            os.environ["TRADER_RUN_DIR"] = previous


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(tmp_path_factory.mktemp("oms"))


def test_order_goes_end_to_end_with_fill_event_and_journal_rows(stack: Stack) -> None:
    sub = Subscriber(stack.ctx, stack.settings.endpoint("bus_out"), [f"oms.event.{AGENT}"])
    try:
        time.sleep(0.3)  # the subscription travels to the proxy before the order
        reply = stack.order(stack.crossing_price(), qty=2)
        assert reply.status is OrderStatus.ACCEPTED and reply.broker_order_id
        seen: list[Any] = []

        def filled() -> bool:
            seen.extend(env.msg for env in sub.drain())
            return any(isinstance(m, Fill) and m.client_order_id == reply.client_order_id for m in seen)

        wait_for(filled, 10, "the fill on oms.event")
        statuses = [m.status for m in seen if isinstance(m, OrderEvent) and m.client_order_id == reply.client_order_id]
        assert OrderStatus.ACCEPTED in statuses and statuses[-1] is OrderStatus.FILLED
    finally:
        sub.close()
    rows = stack.journal_rows("SELECT status, filled_qty FROM orders WHERE client_order_id = ?", reply.client_order_id)
    assert rows == [("filled", 2)]
    fills = stack.journal_rows("SELECT qty FROM fills WHERE client_order_id = ?", reply.client_order_id)
    assert sum(q for (q,) in fills) == 2
    ops = [op for (op,) in stack.journal_rows("SELECT op FROM records WHERE client_order_id = ? ORDER BY seq",
                                               reply.client_order_id)]
    assert ops[:2] == ["submit", "ack"] and "apply_fill" in ops


def test_duplicate_client_order_id_returns_the_original_and_reaches_the_exchange_once(stack: Stack) -> None:
    coid = stack.next_id()
    first = stack.order(stack.resting_price(), coid=coid)
    again = stack.order(stack.resting_price() - 1000, qty=5, coid=coid)
    assert first.status is OrderStatus.ACCEPTED
    assert again == first
    at_exchange = [o for o in stack.exchange.orders_today() if o.client_order_id == coid]
    assert len(at_exchange) == 1 and at_exchange[0].qty == 1


def test_bad_requests_are_rejected_with_reasons_and_journaled(stack: Stack) -> None:
    price = stack.resting_price()
    cases = {
        "UNKNOWN_AGENT": dict(agent="nobody", coid=f"nobody-{stack.trading_date}-1"),
        "UNKNOWN_CODE": dict(code="999990"),
        "BAD_TICK": dict(price=price + 1),
        "INVALID_CLIENT_ORDER_ID": dict(coid="not-an-id"),
    }
    for reason, kw in cases.items():
        kw.setdefault("price", price)
        reply = stack.order(**kw)  # type: ignore[arg-type]
        assert (reply.status, reply.reason_code) == (OrderStatus.REJECTED, reason)
        assert stack.journal_rows("SELECT reason_code FROM orders WHERE client_order_id = ?",
                                  reply.client_order_id) == [(reason,)]


def test_malformed_and_unknown_requests_get_error_replies(stack: Stack) -> None:
    reply = stack.oms.call(Command(command_id="x", name="no-such-command"))
    assert not reply.ok and reply.reason_code == "UNKNOWN_COMMAND"
    reply = stack.oms.call(Command(command_id="y", name="sync", args={"agent_id": AGENT, "since": "yesterday"}))
    assert not reply.ok and reply.reason_code == "BAD_ARGS"
    sock = stack.ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(stack.settings.endpoint("order_manager_rpc"))
    try:
        sock.send_multipart([b"r1", b"", b"\x00garbage"])
        assert sock.poll(5000)
        request_id, status, _ = sock.recv_multipart()
        assert (request_id, status) == (b"r1", b"error")
    finally:
        sock.close()
    assert accepting(stack)


def test_sync_gives_an_agents_orders_fills_and_highest_sequence(stack: Stack) -> None:
    date = stack.trading_date
    coid = f"{AGENT}-{date}-9000"
    placed = stack.order(stack.resting_price(), coid=coid)
    assert placed.status is OrderStatus.ACCEPTED
    snap = stack.command("sync", agent_id=AGENT, since=date)
    ids = {o["client_order_id"] for o in snap["orders"]}
    assert coid in ids and all(o["agent_id"] == AGENT for o in snap["orders"])
    assert snap["max_client_order_n"] == max(parse_client_order_id(i).n for i in ids if parse_client_order_id(i))
    assert all(Fill.model_validate(f).agent_id == AGENT for f in snap["fills"])
    assert all(OrderEvent.model_validate(o) for o in snap["orders"])


def test_cancel_and_cancel_all_take_orders_off(stack: Stack) -> None:
    one = stack.order(stack.resting_price())
    reply = stack.oms.call(CancelRequest(client_order_id=one.client_order_id, agent_id=AGENT))
    assert isinstance(reply, OrderEvent) and reply.status is OrderStatus.CANCELED
    stack.order(stack.resting_price())
    stack.command("cancel_all", agent_id=AGENT)
    assert stack.command("orders", agent_id=AGENT, open=True) == []
    assert [o for o in stack.exchange.open_orders() if o.agent_id == AGENT] == []


def test_exchange_disconnect_refuses_orders_then_reconciles_and_accepts(stack: Stack) -> None:
    price = stack.resting_price()
    stack.exchange.fault(kind="disconnect", seconds=3)

    def refused() -> OrderEvent | None:
        reply = stack.order(price)
        return reply if reply.reason_code == "BROKER_DISCONNECTED" else None

    assert wait_for(refused, 10, "an order refused while the exchange is down").status is OrderStatus.REJECTED
    wait_for(lambda: accepting(stack), 60, "the order manager to reconnect and reconcile")
    assert stack.order(stack.resting_price()).status is OrderStatus.ACCEPTED


def test_kill_9_mid_flow_loses_and_duplicates_nothing(stack: Stack) -> None:
    price, crossing = stack.resting_price(), stack.crossing_price()
    before = stack.status()["orders"]  # type: ignore[index]
    sent = []
    for i in range(20):
        sent.append(stack.order(crossing if i % 4 == 0 else price).client_order_id)
    stack.stop("order-manager", signal.SIGKILL)
    stack.oms.close()
    (stack.run_dir / "run" / "order-manager.pid").unlink(missing_ok=True)
    stack.start("order-manager")
    wait_for(lambda: accepting(stack), 60, "the restarted order manager to reconcile")
    state = stack.command("journal_state")
    assert len(state["orders"]) >= before + 20
    ours = {o["client_order_id"]: o for o in state["orders"]}
    exchange_orders = {o.client_order_id: o for o in stack.exchange.orders_today()}
    for coid in sent:
        assert coid in ours and coid in exchange_orders
        assert ours[coid]["filled_qty"] == exchange_orders[coid].filled_qty
    journal_exec = sorted(f["exec_id"] for f in state["fills"])
    exchange_exec = sorted(f.exec_id for f in stack.exchange.fills_today() if f.client_order_id in ours)
    assert journal_exec == exchange_exec  # none lost, none twice
    assert stack.order(price).status is OrderStatus.ACCEPTED


def test_risk_guard_down_means_orders_rejected_risk_unavailable(stack: Stack) -> None:
    price = stack.resting_price()
    stack.stop("risk-guard")
    reply = stack.order(price)
    assert (reply.status, reply.reason_code) == (OrderStatus.REJECTED, "RISK_UNAVAILABLE")
    assert not [o for o in stack.exchange.orders_today() if o.client_order_id == reply.client_order_id]
