"""The back-tester hears refusals as live does: counted by reason, backed off, no storm from the default roster."""

from __future__ import annotations

from agents.settings import check_roster
from backtest.data import from_simulator
from backtest.engine import AgentSpec, run_backtest
from core.config import PROJECT_ROOT, load_stack
from core.instruments import load_instruments
from core.risk import load_risk_limits, parse_risk_limits

INSTRUMENTS = load_instruments(PROJECT_ROOT / "configs" / "instruments.csv")


def test_a_roster_back_test_of_a_few_days_shows_no_refusal_storm() -> None:
    roster = check_roster(PROJECT_ROOT / "configs" / "agents.toml", INSTRUMENTS, load_stack())
    assert roster.ok, roster.problems
    specs = [AgentSpec.from_settings(a) for a in roster.enabled_agents]
    data = from_simulator(sorted({c for s in specs for c in s.codes}), 3, 7, INSTRUMENTS)
    result = run_backtest(data, specs, risk_limits=load_risk_limits(PROJECT_ROOT / "configs" / "risk.toml"))
    assert result.ok, result.failure
    for agent in result.agents.values():
        assert not agent.alerts, agent.alerts
        assert sum(agent.refusals.values()) <= 2 * len(result.days), (agent.agent_id, dict(agent.refusals))
    pair = result.agents["pair-samsung"]
    assert pair.trades and max(t.qty * t.price for t in pair.trades) <= 30_000_000  # it switches legs, in slices


def test_a_refusal_the_agent_cannot_foresee_is_counted_backed_off_and_not_resent_every_bar() -> None:
    # the position limit is the guard's alone: the context does not check it, so the guard refuses
    limits = parse_risk_limits({"position": {"max_qty_per_agent": 50}})
    spec = AgentSpec("sma", "sma_cross", ("005930",), {"fast": 2, "slow": 5, "qty": 100}, 30_000_000)
    data = from_simulator(["005930"], 1, 7, INSTRUMENTS)
    result = run_backtest(data, [spec], risk_limits=limits)
    agent = result.agents["sma"]
    refused = agent.rejected["POSITION_EXCEEDS_MAX_PER_AGENT"]
    assert refused >= 1 and agent.trades == []
    assert agent.held_back["POSITION_EXCEEDS_MAX_PER_AGENT"] >= 1


def test_a_strategy_working_a_parent_order_fills_it_in_children_within_the_limits() -> None:
    limits = parse_risk_limits({"order": {"max_notional_won": 5_000_000}})
    spec = AgentSpec("trend", "slow_trend", ("035420",), {"window": 30, "eval_every": 2, "t_entry": 0.5, "t_exit": 0.0,
                                                          "cost_multiple": 0.0},
                     30_000_000)
    data = from_simulator(["035420"], 2, 7, INSTRUMENTS)
    result = run_backtest(data, [spec], risk_limits=limits)
    agent = result.agents["trend"]
    assert agent.trades and all(t.qty * t.price <= 5_000_000 for t in agent.trades)
    assert not agent.rejected.get("NOTIONAL_EXCEEDS_MAX_PER_ORDER") and not agent.refused_by_agent
