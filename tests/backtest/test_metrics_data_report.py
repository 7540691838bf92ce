"""Metrics against hand-computed figures, data errors naming file/row/column, the roster report and a sweep."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from backtest.data import DataError, from_file, from_simulator
from backtest.engine import AgentSpec, BacktestError, Trade
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
    assert "<svg" in html and "Fill model: <b>next_open</b>" in html and "<script" not in html
    assert "an order book (spread, depth, impact)" in html
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


def _at(minute: int, side: str, qty: int, price: int, fee: int, tax: int = 0) -> Trade:
    return Trade("a", minute * 60_000_000_000, "005930", side, qty, price, fee, tax, "c", "x")


def test_calmar_expectancy_holding_time_gross_pnl_and_cost_share_by_hand() -> None:
    trades = [
        _at(0, "buy", 10, 1000, 10),  # cost 10,010
        _at(60, "sell", 10, 1100, 11, 22),  # 11,000 - 33 - 10,010 = +957, 10 shares held 60 min
        _at(120, "buy", 10, 1000, 10),
        _at(150, "sell", 5, 900, 5, 9),  # 4,500 - 14 - 5,005 = -519, 5 shares held 30 min
        _at(180, "sell", 5, 900, 4, 9),  # 4,500 - 13 - 5,005 = -518, 5 shares held 60 min
    ]
    m = compute([100_500, 100_200], 100_000, trades)
    assert m.expectancy_won == pytest.approx((957 - 519 - 518) / 3)
    assert m.avg_holding_minutes == pytest.approx((10 * 60 + 5 * 30 + 5 * 60) / 20)
    assert (m.fees_won, m.taxes_won) == (40, 40)
    assert m.gross_pnl_won == 200 + 80
    assert m.cost_share == pytest.approx(80 / 280)
    assert m.max_drawdown == pytest.approx(300 / 100_500)
    assert m.calmar == pytest.approx(m.annual_return / m.max_drawdown)
    flat = compute([100_000, 100_000], 100_000, [])
    assert (flat.calmar, flat.avg_holding_minutes, flat.cost_share, flat.expectancy_won) == (None, None, None, 0.0)


def test_holding_time_matches_sells_to_the_earliest_shares_bought() -> None:
    # 10 bought at 0, 10 at 100; 15 sold at 200: 10 held 200 min, 5 held 100 min
    trades = [_at(0, "buy", 10, 1000, 0), _at(100, "buy", 10, 1000, 0), _at(200, "sell", 15, 1000, 0)]
    assert compute([100_000], 100_000, trades).avg_holding_minutes == pytest.approx((10 * 200 + 5 * 100) / 15)


def test_the_report_calls_the_close_fill_model_optimistic_only_when_it_is_used() -> None:
    from backtest.engine import run_backtest
    from backtest.report import CLOSE_MODEL_WARNING, render_html, warnings

    data = from_simulator(["005930"], 1, 3, MASTER)
    spec = AgentSpec("s", "sma_cross", ("005930",), {"fast": 5, "slow": 20, "qty": 10})
    close = run_backtest(data, [spec], fill_model="close")
    assert warnings(close) == [CLOSE_MODEL_WARNING]
    page = render_html(close)
    assert '<p class="warning">Warning: the close fill model is optimistic' in page
    for row in ("Calmar", "expectancy per closing fill", "average holding time", "costs / gross PnL", "Refusals by reason"):
        assert row in page
    nxt = render_html(run_backtest(data, [spec], fill_model="next_open"))
    assert 'class="warning"' not in nxt and "Fill model: <b>next_open</b>" in nxt


def test_rolling_walk_forward_fits_each_block_tests_on_the_next_and_joins_the_tests() -> None:
    from backtest.engine import run_backtest
    from backtest.sweep import walk_forward, walk_forward_blocks

    data = from_simulator(["005930"], 6, 3, MASTER)
    base = AgentSpec("s", "sma_cross", ("005930",), {"qty": 10}, 50_000_000)
    grid = {"fast": [3, 10], "slow": [20, 40]}
    assert walk_forward_blocks(6, 2) == [(0, 2), (2, 4), (4, 6)]
    wf = walk_forward(data, base, grid, windows=2, metric="total_return", workers=1)
    days = data.days
    assert [(w.in_sample_days, w.out_of_sample_days) for w in wf.windows] == [
        ((days[0], days[1]), (days[2], days[3])), ((days[2], days[3]), (days[4], days[5]))]
    runs = []
    for k, window in enumerate(wf.windows):
        # re-fitted on its own block: the winner is the best of the grid there
        assert window.best_params == window.in_sample[0].params
        assert window.best_in_sample == max(r.value("total_return") for r in window.in_sample if r.metrics)
        # the next window fits on this window's test block
        if k + 1 < len(wf.windows):
            assert wf.windows[k + 1].in_sample == window.out_of_sample
        test = data.select_days(2 * k + 2, 2 * k + 4)
        spec = AgentSpec(base.agent_id, base.strategy, base.codes, {**base.params, **window.best_params}, base.cash_won)
        run = run_backtest(test, [spec]).agents["s"]
        runs.append(run)
        assert window.best_out_of_sample == pytest.approx(run.days[-1].equity_won / run.capital_won - 1)
        assert 1 <= window.out_of_sample_rank <= 4
    assert wf.joined_dates == days[2:]
    pnl = [r.days[-1].equity_won - r.capital_won for r in runs]
    assert wf.joined_equity[1] == runs[0].days[1].equity_won
    assert wf.joined_equity[-1] == 50_000_000 + sum(pnl)
    assert wf.joined is not None and wf.joined.trades == sum(len(r.trades) for r in runs)
    assert wf.joined.end_equity_won == 50_000_000 + sum(pnl)
    with pytest.raises(BacktestError, match="need at least 7 days"):
        walk_forward_blocks(6, 6)


def test_cli_costs_sessions_world_and_walk_forward_options() -> None:
    runner = CliRunner()
    free = runner.invoke(app, ["backtest", "--strategy", "sma_cross", "--codes", "005930", "--days", "1", "--costs", "none",
                               "--sessions", "none", "--book", "off", "--world", "null", "--json"])
    assert free.exit_code == 0, free.output
    out = json.loads(free.stdout[free.stdout.index("{"):])
    assert out["metrics"]["combined"]["trades"] > 0
    assert (out["metrics"]["combined"]["fees_won"], out["metrics"]["combined"]["taxes_won"]) == (0, 0)
    assert out["sessions"] is False and "none" in out["costs"]
    for bad in (["--costs", "cheap"], ["--sessions", "nyse"], ["--book", "maybe"], ["--world", "mars"]):
        got = runner.invoke(app, ["backtest", "--strategy", "sma_cross", "--codes", "005930", "--days", "1", *bad])
        assert got.exit_code == 2, (bad, got.output)
    wf = runner.invoke(app, ["sweep", "--strategy", "sma_cross", "--codes", "005930", "--days", "3", "--grid", "fast=3,5",
                             "--grid", "slow=20", "--walk-forward", "2", "--workers", "1", "--metric", "total_return", "--json"])
    assert wf.exit_code == 0, wf.output
    walk = json.loads(wf.stdout[wf.stdout.index("{"):])["walk_forward"]
    assert len(walk["windows"]) == 2 and walk["joined"]["days"] == 2
