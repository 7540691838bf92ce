"""The simulated world in the back-test: investor classes, earnings announcements heard by the agents, the null world,
and what ``trader sim`` writes read back."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from typer.testing import CliRunner

from agents.strategies import STRATEGIES
from agents.strategy import FlowData, FundData, Strategy, StrategyParams
from backtest.data import DataError, from_bar_dir, from_simulator
from backtest.engine import AgentSpec, run_backtest
from core.config import PROJECT_ROOT
from core.fundamentals import Announcement
from core.instruments import load_instruments

MASTER = load_instruments(PROJECT_ROOT / "configs" / "instruments.csv")


class _Listener(Strategy):
    """Records what it hears of flows and fundamentals, and PER as it moves."""

    name: ClassVar[str] = "test_listener"
    Params = StrategyParams
    heard: ClassVar[list[Any]] = []

    def on_flow(self, ctx: Any, flow: FlowData) -> None:
        _Listener.heard.append(flow)

    def on_fundamentals(self, ctx: Any, fund: FundData) -> None:
        assert ctx.fundamentals(fund.code) == fund
        _Listener.heard.append(fund)


@pytest.fixture()
def listener() -> Any:
    STRATEGIES[_Listener.name] = _Listener
    _Listener.heard = []
    yield _Listener
    STRATEGIES.pop(_Listener.name, None)


def test_agents_hear_every_class_and_each_announcement_in_time(listener: Any) -> None:
    # 2025-04-01 .. : the first quarter's results come out 20-45 days after 31 March
    data = from_simulator(["005930", "000660"], 40, seed=3, master=MASTER, start_date=dt.date(2025, 4, 1))
    run_backtest(data, [AgentSpec("l", "test_listener", ("000660",), {}, cash_won=10_000_000)])
    flows = [h for h in listener.heard if isinstance(h, FlowData)]
    funds = [h for h in listener.heard if isinstance(h, FundData)]
    assert flows and all(f.code == "000660" and f.cumulative for f in flows)
    assert all(f.foreign_net_qty + f.institution_net_qty + f.individual_net_qty == 0 for f in flows)
    assert any(f.institution_net_qty for f in flows) and any(f.individual_net_qty for f in flows)
    assert len(funds) == 1  # the master's figures are in force from the start; one announcement in the window
    ann = funds[0]
    assert ann.source == "sim" and "20250420" <= ann.effective_date <= "20250520"
    assert ann.eps != MASTER["000660"].eps
    bars = data.bars[data.bars["code"] == "000660"]
    first_after = bars[bars["ts_ns"] > ann.ts_ns]["ts_ns"].iloc[0]
    assert dt.datetime.fromtimestamp(ann.ts_ns / 1e9, dt.timezone(dt.timedelta(hours=9))).strftime("%Y%m%d %H:%M") == ann.effective_date + " 08:00"
    assert first_after - ann.ts_ns == 3600 * 10**9  # heard at 08:00, an hour before the first bar it can act on


def test_a_users_announcements_replace_the_simulated_ones(listener: Any) -> None:
    data = from_simulator(["000660"], 5, seed=3, master=MASTER, start_date=dt.date(2025, 4, 1))
    own = data.with_announcements([Announcement("000660", dt.date(2025, 4, 3), 30_000, 120_000, 1_500), Announcement("005930", dt.date(2025, 4, 3), 1, 1, 0)])
    run_backtest(own, [AgentSpec("l", "test_listener", ("000660",), {}, cash_won=10_000_000)])
    funds = [h for h in listener.heard if isinstance(h, FundData)]
    assert [(f.eps, f.bps, f.dps, f.source, f.effective_date) for f in funds] == [(30_000, 120_000, 1_500, "csv", "20250403")]


def test_the_null_world_is_a_world_without_effects_and_an_unknown_world_is_refused() -> None:
    sim = from_simulator(["005930", "005935"], 3, seed=1, master=MASTER)
    null = from_simulator(["005930", "005935"], 3, seed=1, master=MASTER, world="null")
    assert "world=null" in null.source and len(null.bars) == len(sim.bars)
    assert not np.array_equal(sim.bars["close"].to_numpy(), null.bars["close"].to_numpy())
    with pytest.raises(DataError, match="unknown world 'flat'"):
        from_simulator(["005930"], 3, seed=1, master=MASTER, world="flat")


def test_trader_sim_writes_the_whole_world_and_the_back_test_reads_it(tmp_path: Path) -> None:
    from services.cli.main import app

    out = tmp_path / "world"
    res = CliRunner().invoke(app, ["sim", "--days", "2", "--codes", "005930,000660", "--seed", "4", "--out", str(out), "--start", "2025-04-01"])
    assert res.exit_code == 0, res.output
    assert (out / "flows.parquet").exists() and (out / "fundamentals.parquet").exists()
    from services.market_data.recorder import read_table

    bars = read_table(out / "20250401" / "005930.parquet").to_pandas()
    assert (bars["bid"] < bars["ask"]).all() and (bars["bid"] > 0).all()
    assert ((bars["bid"] <= bars["close"]) & (bars["close"] <= bars["ask"])).all()  # the close traded at a side
    data = from_bar_dir(out, MASTER)
    direct = from_simulator(["000660", "005930"], 2, seed=4, master=MASTER, start_date=dt.date(2025, 4, 1))
    assert len(data.flows) == len(direct.flows) == 2 * 2 * 5
    assert data.flows[["foreign_net_qty", "institution_net_qty", "individual_net_qty"]].to_numpy().sum(axis=1).tolist() == [0] * 20
    assert data.fundamentals["eps"].tolist() == direct.fundamentals["eps"].tolist()
    assert set(data.fundamentals["code"]) == {"005930", "000660"}
    res = CliRunner().invoke(app, ["sim", "--days", "1", "--codes", "005930", "--out", str(tmp_path / "x"), "--world", "flat"])
    assert res.exit_code == 2 and "--world must be sim or null" in res.output


def test_trader_backtest_takes_a_users_announcements_and_names_each_bad_row(tmp_path: Path) -> None:
    from services.cli.main import app

    path = tmp_path / "announcements.csv"
    path.write_text("code,date,eps,bps,dps\n005930,2025-01-03,9000,60000,1444\n005930,2025-01-06,bad,1,1\n999999,2025-01-03,1,1,1\n")
    res = CliRunner().invoke(app, ["backtest", "--strategy", "per_valuation", "--codes", "005930", "--days", "3", "--fundamentals", str(path), "--json"])
    assert res.exit_code == 0, res.output
    assert "row 3: eps 'bad' is not a number" in res.output and "row 4: code 999999 is not in the instrument master" in res.output
    assert "1 announcement(s)" in res.output
    res = CliRunner().invoke(app, ["backtest", "--strategy", "per_valuation", "--codes", "005930", "--days", "3", "--fundamentals", str(tmp_path / "none.csv")])
    assert res.exit_code == 2 and "none.csv" in res.output
