"""``trader agents`` (its table and ``--export``) and ``trader sweep``, run as a user would, on the test's files."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from openpyxl import load_workbook

from services.cli.agents import AGENT_COLUMNS, COLUMNS
from tests.cli.conftest import assert_fits, sma, tables, trader
from tests.ports import free_port


@pytest.fixture
def roster_env(tmp_path: Path) -> dict[str, str]:
    roster = tmp_path / "agents.toml"
    roster.write_text(sma("sma-a", "005930", free_port()) + sma("sma-b", "000660", free_port(), enabled=False)
                      + sma("broken", "005930", free_port()).replace("sma_cross", "no_such_strategy"))
    return {**{k: v for k, v in os.environ.items() if not k.startswith("TRADER_")}, "TRADER_RUN_DIR": str(tmp_path),
            "TRADER_ROSTER_FILE": str(roster)}


def test_agents_export_writes_every_entry_to_csv_as_the_json_lists_them(roster_env: dict[str, str], tmp_path: Path) -> None:
    listed = json.loads(trader(roster_env, "agents", "--json").stdout)["agents"]
    target = tmp_path / "roster.csv"
    out = trader(roster_env, "agents", "--export", str(target), columns=80)
    assert out.returncode == 1, "an entry with a problem still exits 1, after writing the file"
    assert f"written to {target}" in out.stdout.replace("\n", "")
    with open(target, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(COLUMNS)
    assert [r["id"] for r in rows] == [a["id"] for a in listed] == ["sma-a", "sma-b", "broken"]
    assert rows[1]["enabled"] == "False" and rows[0]["codes"] == "005930" and rows[0]["cash"] == "50000000"
    assert rows[2]["ok"] == "False" and "no_such_strategy" in rows[2]["problems"]


def test_agents_export_writes_xlsx_and_refuses_another_suffix(roster_env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "roster.xlsx"
    trader(roster_env, "agents", "--export", str(target))
    sheet = load_workbook(target).active
    values = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert values[0] == list(COLUMNS)
    assert [r[0] for r in values[1:]] == ["sma-a", "sma-b", "broken"]
    assert values[1][COLUMNS.index("dp")] == int(json.loads(trader(roster_env, "agents", "--json").stdout)
                                                ["agents"][0]["dp"])
    out = trader(roster_env, "agents", "--export", str(tmp_path / "roster.txt"))
    assert out.returncode == 1 and "use a .csv or .xlsx file name" in out.stderr
    assert not (tmp_path / "roster.txt").exists()


@pytest.mark.parametrize("columns", [80, 120])
def test_agents_fits_the_terminal(roster_env: dict[str, str], columns: int) -> None:
    out = trader(roster_env, "agents", columns=columns)
    (t,) = tables(out.stdout)
    assert_fits(t, [c.header for c in AGENT_COLUMNS], [c.header for c in AGENT_COLUMNS if c.essential], columns)
    assert "no_such_strategy" in out.stdout
    wide, = tables(trader(roster_env, "agents", "--wide", columns=columns).stdout)
    assert wide.headers == list(COLUMNS)


@pytest.mark.slow
def test_sweep_prints_the_grid_best_first_as_the_json_has_it(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TRADER_")}, "TRADER_RUN_DIR": str(tmp_path)}
    args = ("sweep", "--strategy", "sma_cross", "--codes", "005930", "--days", "2", "-g", "fast=2,3", "-g", "slow=5",
            "--workers", "1")
    data = json.loads(trader(env, *args, "--json").stdout)
    assert {json.dumps(r["params"], sort_keys=True) for r in data["rows"]} == {
        '{"fast": 2, "slow": 5}', '{"fast": 3, "slow": 5}'}
    out = trader(env, *args, columns=80)
    assert out.returncode == 0, out.stderr
    (t,) = tables(out.stdout)
    assert_fits(t, ["params", "sharpe", "total_return", "max_drawdown", "trades", "error"],
                ["params", "sharpe", "trades", "error"], 80)
    printed = [float(r[t.headers.index("sharpe")]) for r in t.rows if r[t.headers.index("sharpe")].strip()]
    expected = [r["metrics"]["sharpe"] for r in data["rows"]]
    assert printed == sorted(printed, reverse=True)
    assert printed == pytest.approx(expected, abs=1e-4)
    out = trader(env, "sweep", "--strategy", "sma_cross", "--codes", "005930", "-g", "fast")
    assert out.returncode == 2 and "--grid expects key=v1,v2" in out.stderr
