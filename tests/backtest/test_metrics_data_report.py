"""Metrics against hand-computed figures, data errors naming file/row/column, the roster report and a sweep."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from backtest.data import DataError, from_file, from_simulator
from backtest.engine import AgentSpec, Trade
from backtest.metrics import compute, max_drawdown
from backtest.sweep import run_sweep
from core.instruments import load_instruments
from services.cli.main import app

MASTER = load_instruments("configs/instruments.csv")


def _t(side: str, qty: int, price: int, fee: int, tax: int = 0) -> Trade:
    return Trade("a", 0, "005930", side, qty, price, fee, tax, "c", "x")


def test_metrics_of_a_hand_computed_curve() -> None:
    # capital 1,000 won; closes 1,100, 990, 1,089: returns +10%, -10%, +10%
    m = compute([1100, 990, 1089], 1000, [], bars=10, exposed_bars=4)
    assert m.total_return == pytest.approx(0.089)
    assert m.annual_return == pytest.approx(1.089 ** (252 / 3) - 1)
    r = [0.1, -0.1, 0.1]
    mean = sum(r) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in r) / 2)
    assert m.volatility == pytest.approx(sd * math.sqrt(252))
    assert m.sharpe == pytest.approx(mean / sd * math.sqrt(252))
    assert m.sortino == pytest.approx(mean / math.sqrt(0.01 / 3) * math.sqrt(252))
    assert m.max_drawdown == pytest.approx(0.1)
    assert m.max_drawdown_days == 2
    assert m.exposure == pytest.approx(0.4)


def test_drawdown_duration_counts_days_under_the_peak_until_recovery() -> None:
    assert max_drawdown([100, 90, 95, 100, 80], 100) == (pytest.approx(0.2), 2)


def test_win_rate_profit_factor_turnover_and_costs_from_fills() -> None:
    trades = [
        _t("buy", 10, 1000, 10),  # cost 10,010
        _t("sell", 10, 1100, 11, 22),  # +10,967 - 10,010 = +957
        _t("buy", 10, 1000, 10),
        _t("sell", 10, 900, 9, 18),  # 8,973 - 10,010 = -1,037
    ]
    m = compute([100_000], 100_000, trades)
    assert m.closed_trades == 2
    assert m.win_rate == 0.5
    assert m.profit_factor == pytest.approx(957 / 1037)
    assert m.turnover == pytest.approx(40_000 / 100_000)
    assert (m.fees_won, m.taxes_won) == (40, 40)


def test_user_csv_errors_name_the_column_and_row(tmp_path: Path) -> None:
    good = {"date": ["2025-03-04", "2025-03-04"], "time": ["09:00", "09:01"], "code": ["005930", "005930"],
            "open": [70000, 70100], "high": [70200, 70200], "low": [69900, 70000], "close": [70100, 70100], "volume": [10, 20]}
    path = tmp_path / "bars.csv"
    pd.DataFrame(good).to_csv(path, index=False)
    data = from_file(path, MASTER)
    assert data.bars["close"].tolist() == [70100, 70100] and data.codes == ["005930"]
    pd.DataFrame({k: v for k, v in good.items() if k != "volume"}).to_csv(path, index=False)
    with pytest.raises(DataError, match="missing column 'volume'"):
        from_file(path, MASTER)
    pd.DataFrame({**good, "close": [70100, -5]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="row 2, column 'close'.*positive"):
        from_file(path, MASTER)
    pd.DataFrame({**good, "time": ["09:01", "09:00"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="row 2.*sorted by time"):
        from_file(path, MASTER)
    pd.DataFrame({**good, "code": ["005930", "999990"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="row 2.*999990.*instrument master"):
        from_file(path, MASTER)


def test_roster_backtest_writes_the_html_report_and_csvs(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["backtest", "--roster", "configs/agents.toml", "--days", "2", "--report", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "report.html").read_text()
    assert "<svg" in html and "Fill model: <b>close</b>" in html and "<script" not in html
    assert (tmp_path / "trades.csv").read_text().startswith("agent_id,ts_ns")
    equity = pd.read_csv(tmp_path / "equity.csv")
    assert equity["date"].nunique() == 2 and equity["agent_id"].nunique() >= 2
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert "combined" in summary["metrics"]


def test_cli_exit_codes_for_bad_input() -> None:
    runner = CliRunner()
    bad_params = runner.invoke(app, ["backtest", "--strategy", "sma_cross", "--codes", "005930", "--days", "1", "-p", "fast=40"])
    assert bad_params.exit_code == 2
    unknown_code = runner.invoke(app, ["backtest", "--strategy", "sma_cross", "--codes", "999990", "--days", "1"])
    assert unknown_code.exit_code == 2
    bad_fill = runner.invoke(app, ["backtest", "--strategy", "sma_cross", "--codes", "005930", "--fill", "never"])
    assert bad_fill.exit_code == 2


def test_sweep_across_two_processes_sorts_by_the_metric() -> None:
    data = from_simulator(["005930"], 2, 3, MASTER)
    base = AgentSpec("s", "sma_cross", ("005930",))
    rows = run_sweep(data, base, {"fast": [5, 10], "slow": [20, 8]}, metric="total_return", workers=2)
    assert len(rows) == 4
    ran = [r for r in rows if r.metrics is not None]
    assert [r.value("total_return") for r in ran] == sorted((r.value("total_return") for r in ran), reverse=True)
    refused = [r for r in rows if r.metrics is None]
    assert [r.params for r in refused] == [{"fast": 10, "slow": 8}] and "fast" in refused[0].error


def test_recorded_day_folders_read_back_as_the_same_bars(tmp_path: Path) -> None:
    from backtest.data import from_bar_dir
    from services.market_data import recorder

    sim = from_simulator(["005930", "000660"], 2, 5, MASTER)
    for (day, code), group in sim.bars.groupby([sim.bars["ts_ns"].map(recorder.day_of), "code"]):
        cols = {k: group[k].to_numpy() for k in ("ts_ns", "open", "high", "low", "close", "volume")}
        recorder.write_table(tmp_path, day, code, recorder.columns_to_table(code, cols))
    back = from_bar_dir(tmp_path, MASTER)
    pd.testing.assert_frame_equal(back.bars, sim.bars[back.bars.columns])
    with pytest.raises(DataError, match="no <YYYYMMDD> day folders"):
        from_bar_dir(tmp_path / "empty", MASTER)
