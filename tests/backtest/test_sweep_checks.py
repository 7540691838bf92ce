"""A sweep's parameters checked before any back-test, its guard against unexpected errors, and a local Optuna search."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backtest.data import from_simulator
from backtest.engine import AgentSpec, BacktestError
from backtest.search import Range, run_search
from backtest.sweep import SweepJob, check_sets, run_sweep
from core.config import PROJECT_ROOT
from core.instruments import load_instruments
from services.cli.main import app

MASTER = load_instruments(PROJECT_ROOT / "configs" / "instruments.csv")
BASE = AgentSpec("s", "sma_cross", ("005930",))


@pytest.mark.parametrize(("grid", "named"), [
    ({"fast": [3, 5], "slwo": [20]}, "params.slwo: slwo = 20: Extra inputs are not permitted"),
    ({"fast": [3, 0], "slow": [20]}, "params.fast: fast = 0: Input should be greater than or equal to 1"),
    ({"fast": [3], "order_type": ["limit", "stop"]}, "params.order_type: order_type = 'stop'"),
])
def test_a_parameter_the_strategy_refuses_stops_the_sweep_before_any_back_test(grid: dict, named: str) -> None:
    data = from_simulator(["005930"], 1, 3, MASTER)
    t0 = time.monotonic()
    with pytest.raises(BacktestError, match="^sweep: ") as caught:
        run_sweep(data, BASE, grid, workers=2)  # a pool would take seconds to start: none is started
    assert named in str(caught.value)
    assert time.monotonic() - t0 < 1


def test_a_set_refused_as_a_whole_is_left_to_its_row() -> None:
    check_sets(BASE, [{"fast": 10, "slow": 8}])  # fast not below slow: the model's own rule, the set's row says so
    with pytest.raises(BacktestError, match="unknown strategy"):
        check_sets(AgentSpec("s", "no_such", ("005930",)), [{}])


def test_the_cli_names_the_refused_parameter_and_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADER_RUN_DIR", str(tmp_path))
    runner = CliRunner()
    got = runner.invoke(app, ["sweep", "--strategy", "sma_cross", "--codes", "005930", "--days", "1", "-g", "fast=3,5",
                              "-g", "slow=1,20"])
    assert got.exit_code == 2 and "params.slow: slow = 1" in got.output
    ranged = runner.invoke(app, ["sweep", "--strategy", "sma_cross", "--codes", "005930", "--days", "1", "-g", "fast=3..5"])
    assert ranged.exit_code == 2 and "needs --search optuna" in ranged.output
    no_study = runner.invoke(app, ["sweep", "--strategy", "sma_cross", "--codes", "005930", "--days", "1", "-g", "fast=3",
                                   "--search", "optuna"])
    assert no_study.exit_code == 2 and "--study FILE" in no_study.output


def test_an_unexpected_exception_in_a_back_test_becomes_the_rows_error() -> None:
    data = from_simulator(["005930"], 1, 3, MASTER)
    broken = SweepJob(AgentSpec("s", "sma_cross", ("005930",), None))  # type: ignore[arg-type]  # params must be a mapping
    row = broken.run(data, {"fast": 3})
    assert row.metrics is None and row.error.startswith("TypeError: ") and row.params == {"fast": 3}


def test_a_seeded_search_is_reproducible_and_resumes_to_the_asked_total(tmp_path: Path) -> None:
    data = from_simulator(["005930"], 2, 3, MASTER)
    space = {"fast": Range(2, 9), "slow": [12, 20, 30]}
    one = run_search(data, BASE, space, trials=6, study_path=tmp_path / "one.db", metric="total_return", workers=1, seed=4)
    half = run_search(data, BASE, space, trials=3, study_path=tmp_path / "two.db", metric="total_return", workers=1, seed=4)
    ticks: list[tuple[int, int]] = []
    rest = run_search(data, BASE, space, trials=6, study_path=tmp_path / "two.db", metric="total_return", workers=1, seed=4,
                      progress=lambda d, t: ticks.append((d, t)))
    assert (half.ran, rest.before, rest.ran) == (3, 3, 3) and ticks[0] == (3, 6) and ticks[-1] == (6, 6)
    assert rest.study_name == one.study_name and rest.rows == one.rows and len(one.rows) == 6
    assert [r.value("total_return") for r in one.rows] == sorted((r.value("total_return") for r in one.rows), reverse=True)
    assert all(2 <= r.params["fast"] <= 9 and r.params["slow"] in (12, 20, 30) for r in one.rows)
    with pytest.raises(BacktestError, match="params.fast"):
        run_search(data, BASE, {"fast": Range(0, 4)}, trials=1, study_path=tmp_path / "bad.db")


def test_the_cli_search_prints_the_studys_trials_as_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADER_RUN_DIR", str(tmp_path))
    got = CliRunner().invoke(app, ["sweep", "--strategy", "sma_cross", "--codes", "005930", "--days", "1", "-g", "fast=2..5",
                                   "-g", "slow=12", "--search", "optuna", "--trials", "3", "--study", str(tmp_path / "s.db"),
                                   "--workers", "1", "--json"])
    assert got.exit_code == 0, got.output
    out = json.loads(got.stdout[got.stdout.index("{"):])
    assert out["study"]["trials"] == 3 and len(out["rows"]) == 3
