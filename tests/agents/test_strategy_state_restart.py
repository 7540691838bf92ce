"""The agent process for real: after a kill -9 and a restart, per_valuation does not climb its ladder again."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from agents import state_store
from bus.rpc import RpcFailure
from tests.agents.test_runtime import Stack, free_port, get_status, stack_factory, wait_for  # noqa: F401 (a fixture)

CODE = "005380"  # the master's PER is about 4.8: below a band starting at 5, the first step is bought at once
PARAMS = {"low_per": 5.0, "high_per": 7.0, "step_pct": 0.3, "max_steps": 4, "step_fraction": 0.25}
SERVICES = (("bus", "bus.proxy"), ("exchange", "services.exchange"), ("market-data", "services.market_data"),
            ("risk-guard", "services.risk_guard"), ("order-manager", "services.order_manager"))


def buy_orders(stack: Stack, agent_id: str) -> list[dict[str, Any]]:
    """The agent's buy orders that the market took (one refused or cancelled with nothing done gives its step back)."""
    orders = stack.command("order_manager_rpc", "sync", agent_id=agent_id, since="")["orders"]
    return [o for o in orders if o["side"] == "buy" and not (o["status"] in ("rejected", "canceled", "expired") and not o.get("filled_qty"))]


def ready_for_orders(stack: Stack) -> bool:
    """The order manager is connected to the exchange and the risk guard answers."""
    try:
        info = stack.command("order_manager_rpc", "status")
        stack.command("risk_guard_rpc", "status")
    except RpcFailure:
        return False
    return bool(info["accepting"]) and info["connection"] == "connected"


def restart_after_kill(stack: Stack, agent_id: str, port: int, proc: Any) -> tuple[Any, dict[str, Any]]:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    again = stack.start_agent(agent_id)
    status = wait_for(lambda: (s := get_status(port)) and s["pid"] == again.pid and s["sync"]["state"] == "in_sync" and s,
                      what="the restarted agent in sync")
    return again, status


def bars_after(port: int, status: dict[str, Any], n: int) -> dict[str, Any]:
    """The status once the agent has given its strategy ``n`` new bars since ``status``."""
    def given(s: dict[str, Any]) -> int:
        return s["counters"]["bars"] - s["counters"]["bars_already_warmed"]

    start = given(status)
    return wait_for(lambda: (s := get_status(port)) and given(s) >= start + n and s, what=f"{n} new bars given to the strategy")


@pytest.mark.slow
def test_per_valuation_killed_and_restarted_keeps_its_ladder_and_buys_no_step_again(stack_factory: Callable[..., Stack]) -> None:
    port = free_port()
    stack = stack_factory(
        [{"id": "ladder", "code": CODE, "dp": port, "strategy": "per_valuation", "cash": 50_000_000, "params": PARAMS}],
        TRADER_CLOCK__START_DATE="2026-03-03", TRADER_CLOCK__START_TIME="10:00", TRADER_CLOCK__SPEED="120",
        TRADER_MARKET__CODES=f'["{CODE}"]',
    )
    for name, module in SERVICES:
        stack.start(name, module)
    # the first step must reach the exchange: an order refused while the stack comes up still counts as a step
    wait_for(lambda: ready_for_orders(stack), what="the order path up")
    agent = stack.start_agent("ladder")
    path = state_store.state_path(stack.run_dir, "ladder")

    def holding_after_one_step() -> dict[str, Any] | None:
        s = get_status(port)
        return s if s and s["strategy_state"]["buy_steps"] == 1 and s["book"]["positions"].get(CODE, {}).get("qty", 0) > 0 else None

    wait_for(holding_after_one_step, timeout_s=60, what="the first step bought and held")
    assert len(buy_orders(stack, "ladder")) == 1
    saved, _ = state_store.read(path)
    assert saved is not None and saved.state["buy_steps"] == 1, "the step was saved before its order went out"

    agent, status = restart_after_kill(stack, "ladder", port, agent)
    assert status["resumed"]["restored"] is True, status["resumed"]
    assert status["strategy_state"]["buy_steps"] == 1
    status = bars_after(port, status, 6)
    assert status["strategy_state"]["buy_steps"] == 1
    assert status["counters"]["orders_sent"] == 0
    assert len(buy_orders(stack, "ladder")) == 1, "the restarted agent bought no step again"

    # the proof has teeth: the same restart without the saved state climbs the ladder again
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait(timeout=10)
    path.unlink()
    again = stack.start_agent("ladder")
    wait_for(lambda: len(buy_orders(stack, "ladder")) == 2, what="a fresh strategy buying its first step again")
    status = wait_for(lambda: (s := get_status(port)) and s["pid"] == again.pid and s, what="the fresh agent's status")
    assert status["resumed"]["restored"] is False and status["resumed"]["reason"] == "no saved state"


@pytest.mark.slow
def test_an_agent_whose_state_file_is_corrupt_starts_fresh_alerts_and_keeps_the_file_aside(stack_factory: Callable[..., Stack]) -> None:
    port = free_port()
    stack = stack_factory([{"id": "broken", "code": CODE, "dp": port, "strategy": "per_valuation", "cash": 50_000_000,
                            "params": PARAMS}])
    path = state_store.state_path(stack.run_dir, "broken")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x93not a state")
    stack.start("bus", "bus.proxy")
    stack.start("order-manager", "services.order_manager")
    stack.start_agent("broken")
    status = wait_for(lambda: (s := get_status(port)) and s["sync"]["state"] == "in_sync" and s, timeout_s=30, what="the agent in sync")
    assert status["resumed"]["restored"] is False and "not a saved strategy state" in status["resumed"]["reason"]
    wait_for(lambda: "strategy_state_refused" in stack.log("broken"), what="the refusal's alert in the agent's log")
    aside = path.with_name(state_store.REFUSED_FILE)
    wait_for(lambda: aside.exists() and path.exists(), what="the refused file kept aside and a fresh state saved")
    assert aside.read_bytes() == b"\x93not a state"
    assert state_store.read(path)[0] is not None
