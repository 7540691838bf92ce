"""The roster checker: every kind of problem names agent, key and reason; only bad agents are left out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agents.settings import DEFAULT_ROSTER_PATH, check_roster
from agents.strategy import STRATEGIES
from core.config import PROJECT_ROOT, StackSettings, load_stack
from core.instruments import load_instruments

INSTRUMENTS = load_instruments(PROJECT_ROOT / "configs" / "instruments.csv")


@pytest.fixture()
def stack() -> StackSettings:
    return load_stack(PROJECT_ROOT / "configs" / "stack.toml")


def agent(**kw: Any) -> dict[str, Any]:
    base = {"id": "good", "code": "005930", "dp": 8101, "strategy": "sma_cross", "cash": 10_000_000}
    base.update(kw)
    return base


def problems_of(report, agent_id: str) -> list[tuple[str, str]]:
    return [(p.key, p.reason) for p in report.problems if p.agent_id == agent_id]


def test_the_default_roster_is_clean_and_covers_every_strategy(stack) -> None:
    report = check_roster(DEFAULT_ROSTER_PATH, INSTRUMENTS, stack)
    assert report.problems == []
    agents = report.valid_agents
    assert len(agents) >= 8
    # sma_cross is the back-tester's example; churn is the chaos test's order generator (configs/agents_busy.toml)
    assert {a.strategy for a in agents} >= set(STRATEGIES) - {"sma_cross", "churn"}
    codes = [a.all_codes[0] for a in agents]
    assert any(codes.count(c) >= 2 for c in codes)
    assert all(p.file == str(DEFAULT_ROSTER_PATH) for p in report.problems)


def test_a_duplicate_id_excludes_only_the_second_agent(stack) -> None:
    report = check_roster({"agents": [agent(), agent(dp=8102)]}, INSTRUMENTS, stack)
    assert [a.dp for a in report.valid_agents] == [8101]
    assert problems_of(report, "good") == [("id", "duplicate agent id 'good'")]


def test_a_badly_formed_id_is_reported(stack) -> None:
    report = check_roster({"agents": [agent(id="Bad Id!")]}, INSTRUMENTS, stack)
    assert report.valid_agents == []
    [(key, reason)] = problems_of(report, "Bad Id!")
    assert key == "id" and "pattern" in reason


def test_dp_must_be_unique_and_clear_of_the_stack_ports(stack) -> None:
    stack = stack.model_copy(update={"endpoints": stack.endpoints.model_copy(update={"bus_in": "tcp://127.0.0.1:8200"})})
    roster = {
        "agents": [
            agent(id="a"),
            agent(id="b", dp=8101),
            agent(id="c", dp=stack.dashboard.port),
            agent(id="d", dp=8200),
        ]
    }
    report = check_roster(roster, INSTRUMENTS, stack)
    assert [a.id for a in report.valid_agents] == ["a"]
    assert problems_of(report, "b") == [("dp", "port 8101 is already used by agent a")]
    assert problems_of(report, "c") == [("dp", f"port {stack.dashboard.port} is already used by dashboard.port")]
    assert problems_of(report, "d") == [("dp", "port 8200 is already used by endpoints.bus_in")]


def test_codes_must_be_in_the_master_and_suit_the_strategy(stack) -> None:
    roster = {
        "agents": [
            agent(id="unlisted", code="000020"),
            agent(id="pair-wrong", codes=["005930", "000660"], dp=8102, strategy="pair_arbitrage", code=None),
            agent(id="two-ways", codes=["005930"], dp=8103),
        ]
    }
    roster["agents"][1].pop("code")
    report = check_roster(roster, INSTRUMENTS, stack)
    assert report.valid_agents == []
    assert problems_of(report, "unlisted") == [("code", "'000020' is not in the instrument master")]
    [(key, reason)] = problems_of(report, "pair-wrong")
    assert key == "codes" and "preferred" in reason
    [(key, reason)] = problems_of(report, "two-ways")
    assert "exactly one of 'code' or 'codes'" in reason


def test_unknown_strategy_and_bad_params_name_the_key(stack) -> None:
    roster = {
        "agents": [
            agent(id="nostrat", strategy="martingale"),
            agent(id="range", dp=8102, params={"fast": 0}),
            agent(id="unknown-param", dp=8103, params={"fsat": 5}),
            agent(id="inverted", dp=8104, params={"fast": 40, "slow": 20}),
        ]
    }
    report = check_roster(roster, INSTRUMENTS, stack)
    assert report.valid_agents == []
    [(key, reason)] = problems_of(report, "nostrat")
    assert key == "strategy" and "martingale" in reason
    [(key, reason)] = problems_of(report, "range")
    assert key == "params.fast" and "greater than or equal to 1" in reason
    [(key, _)] = problems_of(report, "unknown-param")
    assert key == "params.fsat"
    [(key, reason)] = problems_of(report, "inverted")
    assert key == "params" and "shorter than slow" in reason


def test_allocations_beyond_the_account_exclude_the_agent_that_overflows(stack) -> None:
    account = stack.broker.account_cash_won
    roster = {"agents": [agent(id="a", cash=account // 2), agent(id="b", dp=8102, cash=account), agent(id="c", dp=8103, cash=account // 2)]}
    report = check_roster(roster, INSTRUMENTS, stack)
    assert [a.id for a in report.valid_agents] == ["a", "c"]
    [(key, reason)] = problems_of(report, "b")
    assert key == "cash" and str(account) in reason


def test_a_starting_holding_needs_its_average_price(stack) -> None:
    report = check_roster({"agents": [agent(start_qty=10)]}, INSTRUMENTS, stack)
    [(key, reason)] = problems_of(report, "good")
    assert "start_avg_price" in reason


def test_a_missing_or_broken_file_is_one_problem(tmp_path: Path, stack) -> None:
    missing = check_roster(tmp_path / "none.toml", INSTRUMENTS, stack)
    assert [(p.key, p.reason) for p in missing.problems] == [("-", "file not found")]
    broken = tmp_path / "agents.toml"
    broken.write_text("[[agents]\nid=", encoding="utf-8")
    report = check_roster(broken, INSTRUMENTS, stack)
    assert report.problems[0].file == str(broken) and "not valid TOML" in report.problems[0].reason


def test_disabled_agents_are_valid_but_not_started(stack) -> None:
    report = check_roster({"agents": [agent(enabled=False)]}, INSTRUMENTS, stack)
    assert [a.id for a in report.valid_agents] == ["good"]
    assert report.enabled_agents == []
