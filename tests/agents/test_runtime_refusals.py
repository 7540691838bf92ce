"""The live shell: its agent's limits from the stack's risk file, and a refusal in an RPC error heard as one (no process)."""

from __future__ import annotations

from pathlib import Path

from agents.context import OrderIntent
from agents.runtime import AgentRuntime
from agents.settings import AgentSettings
from core.config import load_stack
from core.messages import CommandResult
from tests.agents.conftest import INSTRUMENTS, bar


def runtime(tmp_path: Path, risk: str) -> AgentRuntime:
    (tmp_path / "risk.toml").write_text(risk)
    settings = load_stack().model_copy(update={"risk_file": str(tmp_path / "risk.toml"), "run_dir": str(tmp_path)})
    agent = AgentSettings(id="live-1", code="005930", dp=18_901, strategy="sma_cross", cash=50_000_000)
    return AgentRuntime(agent, settings, INSTRUMENTS)


def test_the_live_agent_learns_its_limits_from_the_risk_file_the_guard_reads(tmp_path: Path) -> None:
    rt = runtime(tmp_path, "[order]\nmax_notional_won = 8_000_000\n[agents.live-1]\nmax_open_orders = 3\n")
    limits = rt.context.limits()
    assert (limits.max_notional_per_order_won, limits.max_open_orders) == (8_000_000, 3)


def test_an_order_refused_in_an_rpc_error_is_heard_as_a_refusal_and_backed_off(tmp_path: Path) -> None:
    rt = runtime(tmp_path, "")
    ctx = rt.context
    ctx.start()
    ctx.on_bar(bar("005930", 0, 70_000))
    intent = ctx.buy("005930", 10, 70_000)
    assert isinstance(intent, OrderIntent)
    ctx.drain_outbox()
    rt._on_reply(intent, CommandResult(command_id="c1", ok=False, reason_code="BROKER_DISCONNECTED", error="venue away"))
    assert ctx.refusals.refused == {"BROKER_DISCONNECTED": 1} and rt.counters["orders_rejected"] == 1
    assert ctx.portfolio.cash_available_won == 50_000_000  # the hold is given back
    assert ctx.buy("005930", 10, 70_000).reason_code == "BACKING_OFF"
