"""The supervisor's parts: restart policy, heartbeat lateness, the daily report, retention, the webhook,
and ``trader config check`` on broken configurations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from core.config import PROJECT_ROOT
from core.messages import Alert, AlertLevel, Heartbeat
from services.supervisor.alerting import AlertWebhook
from services.supervisor.health import HeartbeatBook
from services.supervisor.journal import DayJournal, purge_dated_files, retention_cutoff
from services.supervisor.policy import RestartPolicy
from services.supervisor.report import ACCOUNT, AgentStart, daily_report


def test_first_death_restarts_at_once_then_backoff_doubles_up_to_its_ceiling() -> None:
    p = RestartPolicy(backoff_s=1.0, backoff_max_s=3.0, flap_restarts=100, flap_window_s=60)
    delays = []
    for t in range(5):
        at = p.on_death(float(t))
        assert at is not None
        delays.append(at - t)
        p.on_restart(at)
    assert delays == [0.0, 1.0, 2.0, 3.0, 3.0]
    p.on_stable()
    assert p.on_death(10.0) == 10.0


def test_too_many_restarts_within_the_window_is_flapping_and_old_ones_age_out() -> None:
    p = RestartPolicy(backoff_s=0.0, flap_restarts=3, flap_window_s=10)
    for t in (0.0, 1.0, 2.0):
        p.on_restart(p.on_death(t) or t)
    assert p.on_death(3.0) is None
    assert p.on_death(12.5) is not None  # the first two restarts are older than the window now


def hb(name: str) -> Heartbeat:
    return Heartbeat(name=name, pid=1, ts_ns=1)


def test_a_heartbeat_older_than_three_intervals_is_late_once_and_back_when_it_returns() -> None:
    book = HeartbeatBook(interval_s=1.0, late_intervals=3.0)
    book.record(hb("oms"), 0.0)
    book.expect("agent", 0.0)
    assert book.newly_late(2.9) == []
    assert book.newly_late(3.1) == ["agent", "oms"]
    assert book.newly_late(10.0) == []
    assert book.record(hb("oms"), 10.0) is True
    assert book.age("oms", 10.5) == 0.5


def order(coid: str, agent: str, date: str, side: str, qty: int, price: int, status: str = "filled") -> dict:
    return {"client_order_id": coid, "agent_id": agent, "trading_date": date, "code": "005930", "side": side,
            "qty": qty, "price": price, "status": status, "created_ns": int(coid.rsplit("-", 1)[1])}


def fill(coid: str, agent: str, date: str, side: str, qty: int, price: int, fee: int, tax: int) -> dict:
    return {"exec_id": "x" + coid, "client_order_id": coid, "agent_id": agent, "trading_date": date, "code": "005930",
            "side": side, "qty": qty, "price": price, "fee_won": fee, "tax_won": tax, "ts_ns": int(coid.rsplit("-", 1)[1])}


def test_daily_report_counts_the_days_rows_and_realises_only_that_days_pnl() -> None:
    orders = [order("a-20260302-1", "a", "20260302", "buy", 10, 70_000),
              order("a-20260303-2", "a", "20260303", "sell", 4, 72_000),
              order("a-20260303-3", "a", "20260303", "buy", 1, 60_000, status="expired")]
    fills = [fill("a-20260302-1", "a", "20260302", "buy", 10, 70_000, 99, 0),
             fill("a-20260303-2", "a", "20260303", "sell", 4, 72_000, 41, 576)]
    rows = {r["agent_id"]: r for r in daily_report("20260303", orders, fills, {"a": AgentStart(10_000_000, {})},
                                                      {"005930": 71_000})}
    a = rows["a"]
    assert (a["orders"], a["fills"], a["fees_won"], a["taxes_won"], a["sold_qty"]) == (2, 1, 41, 576, 4)
    assert a["realized_pnl_won"] == 4 * (72_000 - 70_000) - 41 - 576  # the first day's buy fee is not today's
    assert a["end_positions"] == {"005930": {"qty": 6, "avg_price": 70_000}}
    assert a["unrealized_pnl_won"] == 6 * (71_000 - 70_000)
    assert rows[ACCOUNT]["orders"] == 2 and rows[ACCOUNT]["end_positions"] == {"005930": {"qty": 6}}


def test_report_rows_are_stored_and_old_rows_and_dated_files_purged_but_fills_are_left_to_the_archive(tmp_path: Path) -> None:
    j = DayJournal(tmp_path)
    j.db.execute("CREATE TABLE fills (exec_id TEXT, trading_date TEXT)")
    j.db.execute("INSERT INTO fills VALUES ('old', '20260101'), ('new', '20260303')")
    j.db.execute("CREATE TABLE alerts (id INTEGER, trading_date TEXT)")
    j.db.execute("INSERT INTO alerts VALUES (1, '20260101'), (2, '20260303')")
    rows = daily_report("20260303", [], [], {"a": AgentStart(1, {})}, {})
    assert j.write_report(rows, 1) == 2
    assert [r["agent_id"] for r in j.report("20260303")] == [ACCOUNT, "a"]
    cutoff = retention_cutoff("20260303", 30)
    assert cutoff == "20260201"
    assert j.purge_before(cutoff) == {"alerts": 1}  # fills are the order manager's to archive, never purged here
    assert j.db.execute("SELECT count(*) FROM fills").fetchone()[0] == 2
    (tmp_path / "bars" / "20260101").mkdir(parents=True)
    (tmp_path / "bars" / "20260302").mkdir(parents=True)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "20260102.csv").write_text("x")
    removed = purge_dated_files([tmp_path / "bars", tmp_path / "reports"], cutoff)
    assert [p.name for p in removed] == ["20260101", "20260102.csv"]
    assert (tmp_path / "bars" / "20260302").exists()
    j.close()


def test_webhook_posts_alerts_at_or_above_its_level_and_counts_failures() -> None:
    got: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        hook = AlertWebhook(f"http://127.0.0.1:{server.server_port}/", "warning", timeout_s=2, retries=0)
        assert not hook.offer(Alert(level=AlertLevel.INFO, source="s", kind="k", text="quiet", ts_ns=1))
        assert hook.offer(Alert(level=AlertLevel.ERROR, source="s", kind="k", text="loud", ts_ns=1))
        hook.close(5)
        assert [g["text"] for g in got] == ["loud"] and hook.sent == 1
    finally:
        server.shutdown()
    dead = AlertWebhook("http://127.0.0.1:9/", "info", timeout_s=0.5, retries=1)
    dead.offer(Alert(level=AlertLevel.CRITICAL, source="s", kind="k", text="lost", ts_ns=1))
    dead.close(5)
    assert dead.failed == 1 and dead.sent == 0


BROKEN_ROSTER = """
[[agents]]
id = "a1"
code = "005930"
dp = 18401
strategy = "sma_cross"
cash = 1000000
[[agents]]
id = "a1"
code = "005930"
dp = 18402
strategy = "sma_cross"
cash = 1000000
[[agents]]
id = "a3"
code = "005930"
dp = 18401
strategy = "sma_cross"
cash = 1000000
[[agents]]
id = "a4"
code = "005930"
dp = 18300
strategy = "sma_cross"
cash = 1000000
[[agents]]
id = "a5"
code = "12345"
dp = 18405
strategy = "sma_cross"
cash = 1000000
[[agents]]
id = "a6"
code = "005930"
dp = 18406
strategy = "no_such_strategy"
cash = 1000000
[[agents]]
id = "a7"
code = "005930"
dp = 18407
strategy = "sma_cross"
cash = 1000000
[agents.params]
fast = -3
"""


def config_check(tmp_path: Path, roster: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "agents.toml"
    path.write_text(roster)
    env = {**os.environ, "TRADER_RUN_DIR": str(tmp_path / "run"), "TRADER_ROSTER_FILE": str(path),
           "TRADER_DASHBOARD__PORT": "18300"}
    return subprocess.run([str(Path(sys.executable).parent / "trader"), "config", "check", "--json"], cwd=PROJECT_ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


def test_config_check_names_file_key_and_reason_of_every_roster_problem(tmp_path: Path) -> None:
    out = config_check(tmp_path, BROKEN_ROSTER)
    assert out.returncode == 1
    problems = {(p["key"], p["reason"].split(" ")[0]) for p in json.loads(out.stdout)}
    assert all(p["file"].endswith("agents.toml") for p in json.loads(out.stdout))
    keys = {k for k, _ in problems}
    assert {"agents.a1.id", "agents.a3.dp", "agents.a4.dp", "agents.a5.code", "agents.a6.strategy",
            "agents.a7.params.fast"} <= keys
    reasons = {p["key"]: p["reason"] for p in json.loads(out.stdout)}
    assert "duplicate" in reasons["agents.a1.id"]
    assert "dashboard.port" in reasons["agents.a4.dp"]


def test_config_check_of_a_clean_set_exits_zero(tmp_path: Path) -> None:
    clean = '[[agents]]\nid = "ok"\ncode = "005930"\ndp = 18501\nstrategy = "sma_cross"\ncash = 1000000\n'
    out = config_check(tmp_path, clean)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout) == []
