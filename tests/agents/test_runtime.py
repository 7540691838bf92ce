"""The agent process for real: pid lock, status page, start-up sync after kill -9, strategy containment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from bus.pubsub import Publisher, Subscriber
from bus.rpc import RpcClient
from core.config import PROJECT_ROOT, StackSettings, load_stack
from core.messages import (
    Command,
    CommandResult,
    Fill,
    Heartbeat,
    OrderEvent,
    SessionEvent,
    SessionPhase,
    Tick,
)
from core.portfolio import Portfolio
from tests.ports import free_port

T0 = 1_772_500_000_000_000_000  # 2026-03-03 01:06:40 UTC, 10:06:40 KST


def wait_for(condition: Callable[[], Any], timeout_s: float = 20.0, what: str = "condition") -> Any:
    """Poll until ``condition()`` is truthy; fail naming ``what`` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def get_status(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=1.0) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


class Stack:
    """Processes of one test run in a temporary run directory; all stopped by ``close``."""

    def __init__(self, run_dir: Path, env: dict[str, str]) -> None:
        self.run_dir = run_dir
        self.env = {**os.environ, "TRADER_RUN_DIR": str(run_dir), **env}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.zctx = zmq.Context()
        saved = {k: os.environ.get(k) for k in self.env if k.startswith("TRADER_")}
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("TRADER_")})
        try:
            self.settings: StackSettings = load_stack()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def start(self, name: str, *module_args: str) -> subprocess.Popen[bytes]:
        log = open(self.run_dir / f"{name}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", *module_args], cwd=PROJECT_ROOT, env=self.env, stdout=log, stderr=log)
        self.procs[name] = proc
        return proc

    def start_agent(self, agent_id: str, module: str = "agents.runtime") -> subprocess.Popen[bytes]:
        return self.start(agent_id, module, "--id", agent_id)

    def log(self, name: str) -> str:
        path = self.run_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def rpc(self, endpoint: str) -> RpcClient:
        return RpcClient(self.zctx, self.settings.endpoint(endpoint), timeout_ms=3000, retries=0)

    def command(self, endpoint: str, name: str, **args: Any) -> Any:
        client = self.rpc(endpoint)
        try:
            reply = client.call(Command(command_id=f"test-{time.monotonic_ns()}", name=name, args=args))
        finally:
            client.close()
        assert isinstance(reply, CommandResult) and reply.ok, reply
        return reply.result

    def stop(self, name: str) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        return proc.returncode

    def close(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)
        self.zctx.destroy(linger=0)


def write_roster(path: Path, agents: list[dict[str, Any]]) -> Path:
    lines = []
    for a in agents:
        lines.append("[[agents]]")
        for k, v in a.items():
            if k != "params":
                lines.append(f"{k} = {json.dumps(v)}")
        lines.append("[agents.params]")
        for k, v in a.get("params", {}).items():
            lines.append(f"{k} = {json.dumps(v)}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def make(agents: list[dict[str, Any]], **env: str) -> Stack:
        roster = write_roster(tmp_path / "agents.toml", agents)
        s = Stack(tmp_path, {"TRADER_ROSTER_FILE": str(roster), **env})
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def sma_agent(agent_id: str, port: int, **params: Any) -> dict[str, Any]:
    return {"id": agent_id, "code": "005930", "dp": port, "strategy": "sma_cross", "cash": 50_000_000,
            "params": {"fast": 2, "slow": 3, "qty": 10, **params}}


def test_a_second_copy_of_an_agent_refuses_to_start_and_names_the_holder(stack_factory: Callable[..., Stack]) -> None:
    port = free_port()
    stack = stack_factory([sma_agent("solo", port)])
    stack.start("bus", "bus.proxy")
    first = stack.start_agent("solo")
    wait_for(lambda: get_status(port), what="the first copy's status page")
    second = subprocess.run([sys.executable, "-m", "agents.runtime", "--id", "solo"], cwd=PROJECT_ROOT, env=stack.env,
                            capture_output=True, timeout=30)
    assert second.returncode != 0
    assert f"held by pid {first.pid}" in second.stderr.decode()
    assert first.poll() is None, "the first copy keeps running"


def test_an_agent_not_in_the_roster_refuses_to_start_with_the_reason(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory([sma_agent("solo", free_port())])
    run = subprocess.run([sys.executable, "-m", "agents.runtime", "--id", "ghost"], cwd=PROJECT_ROOT, env=stack.env,
                         capture_output=True, timeout=30)
    assert run.returncode == 2
    assert "no agent 'ghost'" in run.stderr.decode()


def test_status_page_answers_on_its_dp_while_the_order_manager_is_away(stack_factory: Callable[..., Stack]) -> None:
    port = free_port()
    stack = stack_factory([sma_agent("solo", port)])
    stack.start("bus", "bus.proxy")
    stack.start_agent("solo")
    status = wait_for(lambda: (s := get_status(port)) and s["sync"]["attempts"] >= 2 and s, what="sync retries")
    assert status["agent_id"] == "solo"
    assert status["sync"]["state"] == "waiting"
    assert "order-manager-rpc" in status["sync"]["error"]
    assert status["trading"] == "waiting_sync"
    assert status["book"]["cash_won"] == 50_000_000
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
        page = resp.read().decode()
    assert "agent solo" in page and "waiting" in page
    # SIGTERM: a graceful stop writes the state file and releases the lock
    assert stack.stop("solo") == 0
    state = json.loads((stack.run_dir / "agents" / "solo" / "state.json").read_text())
    assert state["written_because"] == "stop" and state["book"]["cash_won"] == 50_000_000
    assert not (stack.run_dir / "run" / "solo.pid").exists()


def book_facts(book: dict[str, Any]) -> dict[str, Any]:
    """What the orders and fills decide in a book (not the marks, which move with the market)."""
    keys = ("cash_won", "cash_on_hold_won", "realized_pnl_won", "fees_won", "taxes_won", "open_orders")
    positions = {c: (p["qty"], p["cost_won"], p["pending_buy_qty"], p["pending_sell_qty"]) for c, p in book["positions"].items() if p["qty"] or p["pending_buy_qty"] or p["pending_sell_qty"]}
    return {**{k: book[k] for k in keys}, "positions": positions}


def truth(stack: Stack, agent_id: str, cash: int) -> tuple[dict[str, Any], set[str], int]:
    """The agent's book as the order manager's journal has it: facts, open order ids, highest n."""
    result = stack.command("order_manager_rpc", "sync", agent_id=agent_id, since="")
    orders = [OrderEvent.model_validate(o) for o in result["orders"]]
    fills = [Fill.model_validate(f) for f in result["fills"]]
    book = Portfolio.rebuild(cash, {}, orders, fills, markets={"005930": "KOSPI"}, upper_limits={"005930": 10**9})
    return book_facts(book.snapshot()), {o.client_order_id for o in book.open_orders()}, result["max_client_order_n"]


def agent_view(port: int) -> tuple[dict[str, Any], set[str]] | None:
    status = get_status(port)
    if status is None or status["sync"]["state"] != "in_sync":
        return None
    return book_facts(status["book"]), {o["client_order_id"] for o in status["open_orders"]}


@pytest.mark.slow
def test_an_agent_killed_and_restarted_comes_back_with_the_same_book_and_places_nothing_twice(stack_factory: Callable[..., Stack]) -> None:
    port = free_port()
    stack = stack_factory(
        [sma_agent("crash", port)],
        TRADER_CLOCK__START_DATE="2026-03-03", TRADER_CLOCK__START_TIME="10:00", TRADER_CLOCK__SPEED="120",
        TRADER_MARKET__CODES='["005930"]',
    )
    for name, module in (("bus", "bus.proxy"), ("exchange", "services.exchange"), ("market-data", "services.market_data"),
                         ("risk-guard", "services.risk_guard"), ("order-manager", "services.order_manager")):
        stack.start(name, module)
    agent = stack.start_agent("crash")
    wait_for(lambda: (s := get_status(port)) and s["counters"]["orders_sent"] >= 3, timeout_s=60, what="the agent's first orders")

    def same_as_journal() -> bool:
        view = agent_view(port)
        facts, open_ids, _ = truth(stack, "crash", 50_000_000)
        return view is not None and view == (facts, open_ids)

    def traded() -> bool:
        orders = stack.command("order_manager_rpc", "sync", agent_id="crash", since="")["orders"]
        return any(o["status"] != "rejected" for o in orders)

    wait_for(traded, timeout_s=60, what="an order that reached the exchange")
    wait_for(same_as_journal, what="the live book to match the journal")
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait(timeout=10)
    before_facts, before_open, before_n = truth(stack, "crash", 50_000_000)

    restarted = stack.start_agent("crash")
    status = wait_for(lambda: (s := get_status(port)) and s["pid"] == restarted.pid and s["sync"]["state"] == "in_sync" and s,
                      what="the restarted agent in sync")
    # the stale lock of the killed copy was taken over, and the book is the journal's
    assert status["sync"]["orders"] >= 3
    assert status["sync"]["last_seq"] == before_n
    wait_for(same_as_journal, what="the restarted book to match the journal")
    if status["counters"]["orders_sent"] == 0:
        after_facts, after_open, after_n = truth(stack, "crash", 50_000_000)
        if after_n == before_n:  # nothing new placed yet: the book is exactly the one before the kill
            assert agent_view(port) == (after_facts, after_open)
            assert after_open <= before_open
    # new orders continue the day's numbering: no id is used twice, nothing is sent again
    wait_for(lambda: truth(stack, "crash", 50_000_000)[2] > before_n, timeout_s=60, what="a new order after the restart")
    result = stack.command("order_manager_rpc", "sync", agent_id="crash", since="")
    ids = [o["client_order_id"] for o in result["orders"]]
    assert len(ids) == len(set(ids))
    exchange_ids = [o["client_order_id"] for o in stack.command("exchange_rpc", "orders_today")]
    assert len(exchange_ids) == len(set(exchange_ids))


def test_a_strategy_that_keeps_raising_stops_trading_with_an_alert(stack_factory: Callable[..., Stack]) -> None:
    port = free_port()
    stack = stack_factory([{"id": "buggy", "code": "005930", "dp": port, "strategy": "raising", "cash": 10_000_000, "params": {}}])
    stack.start("bus", "bus.proxy")
    stack.start("order-manager", "services.order_manager")
    stack.start_agent("buggy", module="tests.agents.raising_agent")
    wait_for(lambda: (s := get_status(port)) and s["sync"]["state"] == "in_sync", timeout_s=30, what="the agent in sync")
    alerts = Subscriber(stack.zctx, stack.settings.endpoint("bus_out"), ["sys.alert"])
    pub = Publisher(stack.zctx, stack.settings.endpoint("bus_in"), "test-feed")
    try:
        sent = 0

        def halted_after_more_ticks() -> dict[str, Any] | None:
            # Ticks published before the subscriptions reach the proxy are lost, so keep
            # the market going until the agent has stopped (a halted strategy is not called).
            nonlocal sent
            s = get_status(port)
            if s and s["trading"] == "halted_by_errors":
                return s
            pub.publish("md.session", SessionEvent(phase=SessionPhase.OPEN, trading_date="20260303", ts_ns=T0 + sent))
            for _ in range(8):
                pub.publish("md.tick.005930", Tick(code="005930", ts_ns=T0 + sent, price=70_000 + 100 * (sent % 50), qty=1))
                sent += 1
            time.sleep(0.2)
            return None

        status = wait_for(halted_after_more_ticks, timeout_s=60, what="trading stopped")
        assert status["errors_total"] == 5
        assert "ZeroDivisionError" in status["last_error"]
        alert = wait_for(lambda: (a := alerts.recv(200)) is not None and a.msg.source == "buggy" and a, what="the agent's alert on sys.alert")
        assert alert.msg.kind == "strategy_halted" and alert.msg.level == "critical"
        # the process is still alive and answering
        ticks = get_status(port)["counters"]["ticks"]  # type: ignore[index]
        pub.publish("md.tick.005930", Tick(code="005930", ts_ns=T0 + sent + 1_000, price=71_000, qty=1))
        wait_for(lambda: (s := get_status(port)) and s["counters"]["ticks"] > ticks, what="a tick counted after the halt")
        assert get_status(port)["errors_total"] == 5  # type: ignore[index]
    finally:
        alerts.close()
        pub.close()


QUICK_TO_TRADE: dict[str, dict[str, Any]] = {
    "per_valuation": {"low_per": 5.0, "high_per": 7.0},  # the master's PER of 005380 is 4.76: below the band, bought at once
    "foreign_follower": {"entry_share": 0.0001, "hold_share": -1.0},
    "volume_trigger": {"surge_ratio": 1.01, "min_move": 0.0},
    "volatility_tracker": {"fair_per": 100.0, "warmup": 5},
    "slow_trend": {"window": 30, "t_entry": 0.1, "t_exit": 0.0, "cost_multiple": 0.0},
}


@pytest.mark.slow
def test_every_strategy_of_the_default_roster_places_an_order_in_a_fast_multi_day_run(tmp_path: Path) -> None:
    import tomllib

    with open(PROJECT_ROOT / "configs" / "agents.toml", "rb") as f:
        roster = tomllib.load(f)["agents"]
    for a in roster:
        a["dp"] = free_port()  # the default ports may be taken on a shared machine
        # scenario: thresholds any market crosses within the run (the roster's own wait for an effect to show)
        a["params"] = {**a["params"], **QUICK_TO_TRADE.get(a["strategy"], {})}
    stack = Stack(tmp_path, {"TRADER_ROSTER_FILE": str(write_roster(tmp_path / "agents.toml", roster)),
                             "TRADER_CLOCK__START_DATE": "2026-03-03", "TRADER_CLOCK__START_TIME": "08:55",
                             "TRADER_CLOCK__SPEED": "1200"})
    try:
        for name, module in (("bus", "bus.proxy"), ("exchange", "services.exchange"), ("market-data", "services.market_data"),
                             ("risk-guard", "services.risk_guard"), ("order-manager", "services.order_manager")):
            stack.start(name, module)
        for a in roster:
            stack.start_agent(a["id"])
        by_strategy: dict[str, set[str]] = {}
        for a in roster:
            by_strategy.setdefault(a["strategy"], set()).add(a["id"])

        def silent_strategies() -> set[str]:
            placed = {a["id"] for a in roster if (s := get_status(a["dp"])) and s["counters"]["orders_sent"] > 0}
            return {name for name, ids in by_strategy.items() if not ids & placed}

        try:
            wait_for(lambda: not silent_strategies(), timeout_s=95, what="an order from every strategy")
        except AssertionError:
            raise AssertionError(f"strategies without an order: {sorted(silent_strategies())}") from None
    finally:
        stack.close()


def test_an_agent_in_sync_with_the_market_closed_heartbeats_slower_until_the_market_opens(
        stack_factory: Callable[..., Stack]) -> None:
    port = free_port()
    stack = stack_factory([sma_agent("idle-sma", port)], TRADER_BUS__HEARTBEAT_INTERVAL_S="0.2",
                          TRADER_BUS__IDLE_HEARTBEAT_INTERVALS="5")
    stack.start("bus", "bus.proxy")
    stack.start("order-manager", "services.order_manager")
    stack.start_agent("idle-sma")
    wait_for(lambda: (s := get_status(port)) and s["sync"]["state"] == "in_sync", timeout_s=30, what="the agent in sync")
    beats = Subscriber(stack.zctx, stack.settings.endpoint("bus_out"), ["sys.heartbeat.idle-sma"])
    pub = Publisher(stack.zctx, stack.settings.endpoint("bus_in"), "test-feed")

    def heartbeats(seconds: float) -> list[Heartbeat]:
        out, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            env = beats.recv(50)
            if env is not None and isinstance(env.msg, Heartbeat):
                out.append(env.msg)
        return out

    wait_for(lambda: any(hb.interval_s == 1.0 for hb in heartbeats(1.5)), what="the idle interval announced")
    idle = heartbeats(3.0)
    assert 2 <= len(idle) <= 4 and {hb.interval_s for hb in idle} == {1.0}, [hb.interval_s for hb in idle]

    def opened() -> bool:  # the session repeated until the agent has heard it (the publisher's slow joiner)
        pub.publish("md.session", SessionEvent(phase=SessionPhase.OPEN, trading_date="20260303", ts_ns=T0))
        return any(hb.interval_s == 0.2 for hb in heartbeats(0.5))

    wait_for(opened, what="the bus's interval back once the market opened")
    busy = heartbeats(2.0)
    assert len(busy) >= 7 and {hb.interval_s for hb in busy} == {0.2}
