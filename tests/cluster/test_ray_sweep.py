"""Sweeps, walk-forwards and Optuna searches on a real two-node Ray cluster, against the local pool's results.

The tests run in file order on one cluster; the last one kills the second node.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from backtest.cluster import ClusterRunner, LocalCluster
from backtest.data import MarketData, from_simulator
from backtest.engine import AgentSpec
from backtest.sweep import SweepJob, run_sweep, walk_forward
from core.config import PROJECT_ROOT
from core.instruments import load_instruments
from tests.cluster.jobs import RaisingJob

pytestmark = pytest.mark.slow

MASTER = load_instruments(PROJECT_ROOT / "configs" / "instruments.csv")
BASE = AgentSpec("s", "sma_cross", ("005930",), {"qty": 10})
GRID = {"fast": [3, 5, 8], "slow": [6, 20]}  # (8, 6) is refused as a set: a failed row on both paths
TRADER = str(Path(sys.executable).with_name("trader"))


@pytest.fixture(scope="module")
def data() -> MarketData:
    return from_simulator(["005930"], 4, 11, MASTER)


@pytest.fixture(scope="module")
def local_rows(data: MarketData) -> list:
    return run_sweep(data, BASE, GRID, metric="total_return", workers=2)


def test_a_sweep_across_both_nodes_gives_the_local_pools_rows(cluster: LocalCluster, data: MarketData, local_rows: list) -> None:
    import ray

    with ClusterRunner(SweepJob(BASE), cluster.address) as runner:
        assert ray.cluster_resources()["CPU"] == 2  # both nodes joined
        ticks: list[tuple[int, int]] = []
        rows = run_sweep(data, BASE, GRID, metric="total_return", runner=runner, progress=lambda d, t: ticks.append((d, t)))
    assert rows == local_rows  # params, every metric, errors, and the order
    assert ticks == [(k, 6) for k in range(1, 7)]
    assert [r.params for r in rows if r.error] == [{"fast": 8, "slow": 6}]


def test_a_walk_forward_on_the_cluster_equals_the_local_one(cluster: LocalCluster, data: MarketData) -> None:
    grid = {"fast": [3, 5], "slow": [20]}
    here = walk_forward(data, BASE, grid, windows=2, metric="total_return", workers=1)
    there = walk_forward(data, BASE, grid, windows=2, metric="total_return", cluster=cluster.address)
    assert there == here and there.joined is not None


def test_a_task_that_raises_comes_back_as_its_failed_row(cluster: LocalCluster, data: MarketData, local_rows: list) -> None:
    sets = [{"fast": 3, "slow": 20}, {"fast": 5, "slow": 20}]
    with ClusterRunner(RaisingJob(BASE), cluster.address) as runner:
        broke, ran = runner.run(data, sets)
    assert broke.metrics is None and "RuntimeError" in broke.error and "the task broke on fast=3" in broke.error
    assert ran == next(r for r in local_rows if r.params == sets[1])


def test_an_address_that_does_not_answer_fails_fast_with_exit_2(tmp_path: Path) -> None:
    from backtest.cluster import free_port

    address = f"127.0.0.1:{free_port(set())}"
    env = {**os.environ, "TRADER_RUN_DIR": str(tmp_path), "TRADER_CLUSTER": address}
    t0 = time.monotonic()
    out = subprocess.run([TRADER, "sweep", "--strategy", "sma_cross", "--codes", "005930", "--days", "1", "-g", "fast=3,5",
                          "-g", "slow=20"], check=False, env=env, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    assert out.returncode == 2, out.stderr
    assert f"Ray cluster at {address} does not answer: Connection refused" in out.stderr and "error:" in out.stderr
    assert took < 15  # the CLI's start-up and the data, not ray.init's retries


def test_the_cli_on_a_throw_away_local_ray_prints_the_pools_rows(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "TRADER_"))}
    env["TRADER_RUN_DIR"] = str(tmp_path)
    args = [TRADER, "sweep", "--strategy", "sma_cross", "--codes", "005930", "--days", "2", "-g", "fast=3,5,8",
            "-g", "slow=6,20", "--json"]
    pool = subprocess.run(args, check=False, env=env, capture_output=True, text=True, timeout=60)
    ray = subprocess.run([*args, "--cluster", "local"], check=False, env=env, capture_output=True, text=True, timeout=90)
    assert pool.returncode == ray.returncode == 0, ray.stderr
    assert json.loads(ray.stdout)["rows"] == json.loads(pool.stdout)["rows"]


def _finished_trials(db: Path) -> list[tuple[int, str]]:
    """(number, completion time) of the trials a search ran to an end."""
    if not db.exists():
        return []
    with sqlite3.connect(db) as con:
        try:
            return con.execute("SELECT t.number, t.datetime_complete FROM trials t JOIN trial_user_attributes a "
                               "ON a.trial_id = t.trial_id WHERE a.key = 'row' ORDER BY t.number").fetchall()
        except sqlite3.OperationalError:  # the tables are not made yet
            return []


def test_an_optuna_search_killed_midway_resumes_without_rerunning_done_trials(cluster: LocalCluster, tmp_path: Path) -> None:
    db = tmp_path / "study.db"
    args = [TRADER, "sweep", "--strategy", "sma_cross", "--codes", "005930", "--days", "6", "--seed", "5",
            "-g", "fast=2..12", "-g", "slow=20,30,40", "--metric", "total_return", "--search", "optuna", "--trials", "10",
            "--study", str(db), "--workers", "1", "--cluster", cluster.address, "--json"]
    env = {**os.environ, "TRADER_RUN_DIR": str(tmp_path)}
    first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(_finished_trials(db)) < 3 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # as a machine that goes away: no clean-up of its running trial
        first.communicate()
    done = _finished_trials(db)
    assert 3 <= len(done) < 10, done
    again = subprocess.run(args, check=False, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    out = json.loads(again.stdout)
    assert out["study"]["trials"] == 10 and out["study"]["ran"] == 10 - len(done)
    after = _finished_trials(db)
    assert len(after) == 10 and after[: len(done)] == done  # the done trials kept their times: not run again
    assert all(r["metrics"] is not None for r in out["rows"])
    values = [r["metrics"]["total_return"] for r in out["rows"]]
    assert values == sorted(values, reverse=True)


def test_a_node_killed_midway_through_a_sweep_changes_nothing_in_the_rows(cluster: LocalCluster, data: MarketData) -> None:
    slow_data = from_simulator(["005930"], 40, 11, MASTER)  # each back-test long enough to be caught running
    grid = {"fast": [3, 5, 8, 12], "slow": [20, 30]}
    local = run_sweep(slow_data, BASE, grid, metric="total_return", workers=2)
    killed: list[str] = []

    def kill_the_second_node_while_it_runs_a_set() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            names = [p.name() for p in cluster.processes(1)]
            if any("_row_of" in n for n in names):
                cluster.kill_node(1)
                killed.extend(names)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_the_second_node_while_it_runs_a_set)
    killer.start()
    try:
        rows = run_sweep(slow_data, BASE, grid, metric="total_return", cluster=cluster.address)
    finally:
        killer.join()
    assert any("_row_of" in n for n in killed) and "raylet" in killed
    assert cluster.processes(1) == []
    assert rows == local
