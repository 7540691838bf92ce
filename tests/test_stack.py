"""The whole stack from the Procfile, in a temporary run directory on a fast clock.

One stack per module (starting it is the expensive part): every Procfile line
as its own process, a roster of two trading agents and one that cannot start
(its status port is taken), the supervisor running them. The tests drive it
through the ``trader`` CLI and check the outcome against the processes, the
bus and the journal. At the end ``trader down`` must leave no process and no
lock behind; the fixture kills whatever is left even when a test failed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq

from bus.pubsub import Subscriber
from core.config import PROJECT_ROOT
from services.cli.stack import stack_entries
from tests.ports import free_port

pytestmark = pytest.mark.slow

TRADER = str(Path(sys.executable).parent / "trader")


def wait_for(condition: Callable[[], Any], timeout_s: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def sma(agent_id: str, code: str, dp: int) -> str:
    return (f'[[agents]]\nid = "{agent_id}"\ncode = "{code}"\ndp = {dp}\nstrategy = "sma_cross"\ncash = 50000000\n'
            "[agents.params]\nfast = 2\nslow = 3\nqty = 10\n\n")


class Stack:
    """The processes of one Procfile, the environment they share, and a view of the bus's alerts."""

    def __init__(self, run_dir: Path, env: dict[str, str]) -> None:
        self.run_dir = run_dir
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.seen_pids: set[int] = set()
        self.ctx = zmq.Context()
        self.alerts: list[Any] = []
        self.sub: Subscriber | None = None
        self.started = time.time()

    def start(self) -> None:
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        for name, cmd in stack_entries(kind=self.env.get("TRADER_BROKER__KIND", "paper")):
            argv = cmd.split()
            argv[0] = sys.executable if argv[0] == "python" else argv[0]
            with open(self.run_dir / "logs" / f"{name}.log", "ab") as log:
                p = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
            self.procs[name] = p
            self.seen_pids.add(p.pid)
        self.sub = Subscriber(self.ctx, f"ipc://{self.run_dir}/run/bus-out.sock", ["sys.alert"])

    def trader(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([TRADER, *args], cwd=PROJECT_ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)

    def ps(self) -> dict[str, dict[str, Any]]:
        out = self.trader("ps", "--json")
        if not out.stdout.strip().startswith("["):
            return {}
        rows = {r["name"]: r for r in json.loads(out.stdout)}
        self.seen_pids.update(r["pid"] for r in rows.values() if r.get("pid"))
        return rows

    def drain_alerts(self) -> list[Any]:
        assert self.sub is not None
        self.alerts += [env.msg for env in self.sub.drain()]
        return self.alerts

    def journal(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(self.run_dir / "journal.sqlite", timeout=5)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def kill_everything(self) -> None:
        """Kill every process of the stack, agents started by the supervisor included, then reap them."""
        for pid in list(self.seen_pids):  # the supervisor's children first, so nothing restarts them
            try:
                self.seen_pids.update(c.pid for c in psutil.Process(pid).children(recursive=True))
            except psutil.Error:
                pass
        for lock in (self.run_dir / "run").glob("*.pid"):
            try:
                text = lock.read_text().strip()
                owner = psutil.Process(int(json.loads(text)["pid"]) if text.startswith("{") else int(text))
                if owner.create_time() >= self.started - 1:  # not a pid reused by a process from before the stack
                    self.seen_pids.add(owner.pid)
            except (OSError, ValueError, KeyError, psutil.Error):
                pass
        for pid in self.seen_pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
        for p in self.procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if self.sub is not None:
            self.sub.close()
        self.ctx.destroy(linger=0)


SERVICES = {"bus", "exchange", "market-data", "order-manager", "risk-guard", "reconciler", "supervisor", "dashboard"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("stack")
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    bad_dp = blocker.getsockname()[1]
    roster = run_dir / "agents.toml"
    roster.write_text(sma("sma-a", "005930", free_port()) + sma("sma-b", "000660", free_port())
                      + sma("crasher", "005930", bad_dp))
    env = {
        **os.environ,
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONUNBUFFERED": "1",
        "TRADER_RUN_DIR": str(run_dir),
        "TRADER_ROSTER_FILE": str(roster),
        "TRADER_CLOCK__SPEED": "300",
        "TRADER_CLOCK__START_DATE": "2026-03-03",
        "TRADER_CLOCK__START_TIME": "14:45",
        "TRADER_MARKET__CODES": '["005930", "000660"]',
        "TRADER_DASHBOARD__PORT": str(free_port()),
        "TRADER_SUPERVISOR__FLAP_RESTARTS": "3",
        "TRADER_SUPERVISOR__RESTART_BACKOFF_S": "0.1",
        "TRADER_SUPERVISOR__KILL_TIMEOUT_S": "4",
        "TRADER_RECONCILE__AGENT_BOOKS": "false",
        "TRADER_CACHE_DIR": str(run_dir / "cache"),
    }
    # the calendar's cache is there before the stack starts, as on every start but a machine's first
    subprocess.run([sys.executable, "-c", "from core.calendar_cache import load_calendar; load_calendar()"],
                   cwd=PROJECT_ROOT, env=env, check=True, timeout=120)
    s = Stack(run_dir, env)
    try:
        s.start()
        yield s
    finally:
        blocker.close()
        s.kill_everything()


def test_every_process_of_the_procfile_and_every_good_agent_is_healthy(stack: Stack) -> None:
    def healthy() -> dict[str, dict[str, Any]] | None:
        rows = stack.ps()
        services_ok = SERVICES <= {n for n, r in rows.items() if r["kind"] == "service" and r["state"] == "running"
                                   and r.get("heartbeat_age_s") is not None and r["heartbeat_age_s"] < 3}
        agents_ok = all(rows.get(a, {}).get("sync") == "in_sync" for a in ("sma-a", "sma-b"))
        return rows if services_ok and agents_ok else None

    rows = wait_for(healthy, 60, "every service heartbeating and both agents in sync")
    for name in SERVICES | {"sma-a", "sma-b"}:
        assert rows[name]["rss_bytes"] > 0 and rows[name]["threads"] >= 1
    for name in SERVICES:  # what a process does not need, it does not load
        maps = Path(f"/proc/{rows[name]['pid']}/maps").read_text()
        assert "/pandas/" not in maps, f"{name} loaded pandas"
        if name in ("bus", "dashboard"):
            assert "/numpy/" not in maps, f"{name} loaded numpy"


def test_an_agent_that_cannot_start_is_stopped_as_flapping_with_an_alert(stack: Stack) -> None:
    wait_for(lambda: stack.ps().get("crasher", {}).get("state") == "flapping", 60, "the crasher marked flapping")
    alerts = wait_for(lambda: [a for a in stack.drain_alerts() if a.kind == "agent_flapping" and "crasher" in a.text],
                      10, "the flapping alert")
    assert alerts[0].level == "error"
    assert "not restarting" in alerts[0].text


def test_spawn_of_a_running_agent_is_refused_with_the_reason(stack: Stack) -> None:
    wait_for(lambda: stack.ps().get("sma-a", {}).get("state") == "running", 30, "sma-a running")
    out = stack.trader("spawn", "sma-a")
    assert out.returncode == 1
    assert "ALREADY_RUNNING" in out.stderr and "already running" in out.stderr


def test_kill_minus_nine_of_an_agent_is_restarted_in_sync_and_its_stale_lock_taken_over(stack: Stack) -> None:
    before = wait_for(lambda: (r := stack.ps().get("sma-b")) and r.get("sync") == "in_sync" and r, 30, "sma-b in sync")
    os.kill(before["pid"], signal.SIGKILL)

    def back() -> dict[str, Any] | None:
        r = stack.ps().get("sma-b")
        return r if r and r["pid"] != before["pid"] and r.get("sync") == "in_sync" else None

    after = wait_for(back, 30, "sma-b restarted and in sync")
    assert after["restarts"] == before["restarts"] + 1
    assert after["last_exit"] == -signal.SIGKILL
    lock = json.loads((stack.run_dir / "run" / "sma-b.pid").read_text())
    assert lock["pid"] == after["pid"]
    assert "taking over stale lock" in (stack.run_dir / "logs" / "sma-b.log").read_text()


def test_kill_stops_an_agent_and_leaves_none_of_its_orders_open(stack: Stack) -> None:
    wait_for(lambda: stack.ps().get("sma-a", {}).get("sync") == "in_sync", 30, "sma-a in sync")
    out = stack.trader("kill", "sma-a")
    assert out.returncode == 0, out.stderr
    row = stack.ps()["sma-a"]
    assert row["state"] == "stopped" and row["pid"] is None
    assert not (stack.run_dir / "run" / "sma-a.pid").exists()
    open_rows = wait_for(lambda: not stack.journal(
        "SELECT client_order_id FROM orders WHERE agent_id = 'sma-a' AND status NOT IN "
        "('filled', 'canceled', 'rejected', 'expired')") or None, 15, "no open order of sma-a")
    assert open_rows
    assert stack.trader("spawn", "sma-a").returncode == 0


def test_a_simulated_day_ends_with_no_open_order_and_a_report_matching_the_journal(stack: Stack) -> None:
    report = stack.run_dir / "reports" / "20260303.csv"
    wait_for(report.exists, 90, "the daily report of 2026-03-03")
    assert not stack.journal("SELECT client_order_id FROM orders WHERE trading_date = '20260303' AND status NOT IN "
                             "('filled', 'canceled', 'rejected', 'expired')")
    rows = {r[0]: r[1:] for r in stack.journal(
        "SELECT agent_id, orders, fills, fees_won, taxes_won FROM daily_reports WHERE trading_date = '20260303'")}
    for agent_id in ("sma-a", "sma-b"):
        orders = stack.journal("SELECT count(*) FROM orders WHERE trading_date = '20260303' AND agent_id = ?", agent_id)[0][0]
        fills, fees, taxes = stack.journal("SELECT count(*), coalesce(sum(fee_won), 0), coalesce(sum(tax_won), 0) "
                                           "FROM fills WHERE trading_date = '20260303' AND agent_id = ?", agent_id)[0]
        assert rows[agent_id] == (orders, fills, fees, taxes)
    total_orders = stack.journal("SELECT count(*) FROM orders WHERE trading_date = '20260303'")[0][0]
    assert rows["ACCOUNT"][0] == total_orders
    assert total_orders > 0
    csv_lines = report.read_text().splitlines()
    assert csv_lines[0].startswith("trading_date,agent_id,orders,fills")
    assert len(csv_lines) == 1 + len(rows)


def test_down_stops_everything_and_leaves_no_lock(stack: Stack) -> None:
    wait_for(lambda: stack.ps().get("sma-a", {}).get("state") == "running", 30, "sma-a running again")
    out = stack.trader("down", timeout=120)
    assert out.returncode == 0, out.stderr
    for name, p in stack.procs.items():
        assert p.wait(20) is not None, name
    alive = [pid for pid in stack.seen_pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert alive == []
    assert sorted(p.name for p in (stack.run_dir / "run").glob("*.pid")) == []
