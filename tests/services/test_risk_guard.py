"""The risk guard against real processes: bus proxy, paper exchange, market data, order manager, risk guard.

One stack per module; tests run in file order (the last one restarts the guard).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from bus.pubsub import Subscriber
from bus.rpc import RpcClient
from core import krx
from core.messages import CancelRequest, Command, CommandResult, OrderRequest, RiskState, Side
from tests.services.test_order_manager import Stack, wait_for

AGENT = "foreign-hynix"
CODE = "000660"
TIGHT_RISK = """
[order]
max_qty = 100
[rate]
max_per_agent = 1000
max_account = 1000
"""


class GuardStack(Stack):
    """The order manager's stack with a risk file of tight order limits, and a client of the guard."""

    def __init__(self, run_dir: Any) -> None:
        super().__init__(run_dir)
        (run_dir / "risk.toml").write_text(TIGHT_RISK)
        self.guard = RpcClient(self.ctx, self.settings.endpoint("risk_guard_rpc"), timeout_ms=3000, retries=0)

    def ask(self, name: str, **args: Any) -> CommandResult:
        reply = self.guard.call(Command(command_id=uuid.uuid4().hex, name=name, args=args))
        assert isinstance(reply, CommandResult)
        return reply

    def guard_status(self) -> dict[str, Any] | None:
        try:
            return self.ask("status").result
        except Exception:
            self.guard.close()
            return None

    def decide(self, price: int, qty: int = 1, side: Side = Side.BUY, agent: str = AGENT, code: str = CODE) -> dict[str, Any]:
        req = OrderRequest(client_order_id=f"{agent}-20260105-{uuid.uuid4().int % 10**9}", agent_id=agent, code=code,
                           side=side, qty=qty, price=price)
        reply = self.guard.call(req)
        assert isinstance(reply, CommandResult) and reply.ok, reply
        return reply.result

    def last(self) -> int:
        return int(self.exchange.quote(CODE)["last"])

    def close(self) -> None:
        self.guard.close()
        super().close()


def consistent(stack: GuardStack) -> bool:
    st = stack.guard_status()
    return bool(st and st["consistent"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardStack]:
    s = GuardStack(tmp_path_factory.mktemp("risk"))
    try:
        s.start("bus")
        s.start("risk-guard")
        yield s
    finally:
        s.close()


def test_starts_halted_until_it_has_the_journal_and_the_market(stack: GuardStack) -> None:
    status = wait_for(stack.guard_status, 20, "the risk guard to answer")
    assert status["state"] == "HALTED" and not status["consistent"]
    assert "journal sync" in status["reason"] and "market session" in status["reason"]
    refused = stack.decide(70_000, agent="foreign-hynix")
    assert not refused["approved"] and refused["reason_code"] == "TRADING_STATE_HALTED"
    for name in ("exchange", "market-data", "order-manager"):
        stack.start(name)
    wait_for(lambda: consistent(stack), 60, "the risk guard to sync with the order manager and market data")
    assert stack.guard_status()["state"] == "ACTIVE"  # type: ignore[index]


def test_approves_a_good_order(stack: GuardStack) -> None:
    decision = wait_for(lambda: (d := stack.decide(stack.last())) and d["approved"] and d, 20, "an approval")
    assert decision == {"approved": True, "reason_code": "", "text": ""}


@pytest.mark.parametrize(
    ("describe", "reason_code"),
    [
        (lambda last: {"price": last, "qty": 101}, "QTY_EXCEEDS_MAX_PER_ORDER"),
        (lambda last: {"price": last + 1}, "BAD_TICK"),
        (lambda last: {"price": krx.round_to_tick(last * 1.03, "up"), "side": Side.SELL, "qty": 5}, "INSUFFICIENT_SHARES"),
        (lambda last: {"price": last, "agent": "nobody"}, "UNKNOWN_AGENT"),
        (lambda last: {"price": krx.round_to_tick(last * 1.2, "down")}, "FAT_FINGER"),
    ],
)
def test_refuses_with_a_reason_code(stack: GuardStack, describe: Any, reason_code: str) -> None:
    decision = stack.decide(**describe(stack.last()))
    assert not decision["approved"]
    assert decision["reason_code"] == reason_code
    assert decision["text"]


def test_cancels_always_pass_even_when_halted(stack: GuardStack) -> None:
    stack.ask("halt", who="test", why="cancel check")
    try:
        reply = stack.guard.call(CancelRequest(client_order_id=f"{AGENT}-20260105-1", agent_id=AGENT))
        assert isinstance(reply, CommandResult) and reply.result["approved"] is True
    finally:
        stack.ask("resume", who="test", why="cancel check done")


def test_halt_and_resume_over_rpc_change_risk_state_on_the_bus(stack: GuardStack) -> None:
    sub = Subscriber(stack.ctx, stack.settings.endpoint("bus_out"), ["risk.state"])
    try:
        time.sleep(0.3)  # let the subscription reach the proxy (a slow joiner misses messages)
        seen: list[RiskState] = []

        def state_seen(state: str, who: str) -> bool:
            while (env := sub.recv(50)) is not None:
                if isinstance(env.msg, RiskState):
                    seen.append(env.msg)
            return any(m.state == state and m.who == who for m in seen)

        result = stack.ask("halt", who="ops", why="stop everything")
        assert result.ok and result.result["state"] == "HALTED"
        wait_for(lambda: state_seen("HALTED", "ops"), 10, "risk.state HALTED by ops")
        refused = stack.decide(stack.last())
        assert refused["reason_code"] == "TRADING_STATE_HALTED"
        stack.ask("reduce", who="ops", why="reduce only")
        wait_for(lambda: state_seen("REDUCING", "ops"), 10, "risk.state REDUCING")
        assert stack.decide(stack.last())["reason_code"] == "TRADING_STATE_REDUCING"
        stack.ask("resume", who="ops", why="all clear")
        wait_for(lambda: state_seen("ACTIVE", "ops"), 10, "risk.state ACTIVE")
        assert stack.decide(stack.last())["approved"]
    finally:
        sub.close()


def test_garbage_and_unknown_requests_get_error_replies(stack: GuardStack) -> None:
    unknown = stack.ask("explode")
    assert not unknown.ok and unknown.reason_code == "UNKNOWN_COMMAND"
    sock = stack.ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(stack.settings.endpoint("risk_guard_rpc"))
    try:
        sock.send_multipart([b"req-1", b"", b"\x00not msgpack at all"])
        assert sock.poll(3000)
        request_id, status, _ = sock.recv_multipart()
        assert (request_id, status) == (b"req-1", b"error")
    finally:
        sock.close()
    assert stack.guard_status()["state"] == "ACTIVE"  # type: ignore[index]  # still serving


def test_a_persisted_halt_survives_a_restart(stack: GuardStack) -> None:
    stack.ask("halt", who="ops", why="overnight")
    stack.stop("risk-guard")
    stack.guard.close()
    stack.start("risk-guard")
    wait_for(lambda: consistent(stack), 30, "the restarted risk guard to sync")
    status = stack.guard_status()
    assert status is not None and status["state"] == "HALTED"
    assert (status["who"], status["reason"]) == ("ops", "overnight")
    stack.ask("resume", who="ops", why="morning")
    assert stack.guard_status()["state"] == "ACTIVE"  # type: ignore[index]
