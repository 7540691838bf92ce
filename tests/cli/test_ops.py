"""``trader ps`` (fitted to the terminal, ``--wide``, ``--watch``), ``trader reload`` and ``trader profile``
against a real bus proxy and supervisor in a private run directory."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from core.config import PROJECT_ROOT
from services.cli.ops import PS_COLUMNS, top_functions
from tests.cli.conftest import Supervised, assert_fits, sma, tables, trader, wait_for

EVERY = [c.header for c in PS_COLUMNS]
ESSENTIAL = [c.header for c in PS_COLUMNS if c.essential]


@pytest.mark.parametrize("columns", [80, 120])
def test_ps_fits_the_terminal_and_names_what_it_left_out(supervised: Supervised, columns: int) -> None:
    out = supervised.trader("ps", columns=columns)
    assert out.returncode == 0, out.stderr
    (t,) = tables(out.stdout)
    assert_fits(t, EVERY, ESSENTIAL, columns)
    assert t.hidden, "fifteen columns do not fit in 120; the footer names the rest"
    rows = {r[0].strip(): r for r in t.rows}
    pid = str(supervised.procs["bus"].pid)
    cell = rows["bus"][t.headers.index("pid")]
    assert cell.strip() == pid and cell.endswith(pid + " ") and cell.startswith(" "), "numbers are right-aligned"


def test_ps_shows_more_columns_at_120_than_at_80_and_wide_shows_all(supervised: Supervised) -> None:
    narrow, = tables(supervised.trader("ps", columns=80).stdout)
    wider, = tables(supervised.trader("ps", columns=120).stdout)
    assert set(narrow.headers) < set(wider.headers)
    out = supervised.trader("ps", "--wide", columns=80)
    assert out.returncode == 0, out.stderr
    (t,) = tables(out.stdout)
    assert t.headers == EVERY and t.hidden == []
    assert t.width > 80, "not a terminal: --wide prints the table at its full width"
    assert "not shown" not in out.stdout


def test_ps_json_is_the_supervisors_listing_unchanged(supervised: Supervised) -> None:
    out = supervised.trader("ps", "--json", columns=40)
    rows = json.loads(out.stdout)
    bus = next(r for r in rows if r["name"] == "bus")
    assert bus["pid"] == supervised.procs["bus"].pid and bus["kind"] == "service" and "rss_bytes" in bus


def _read_until(fd: int, done, timeout_s: float) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not done(buf):
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the pty closed: the process has exited
                break
            if not chunk:
                break
            buf += chunk
    return buf


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


def test_ps_watch_redraws_in_a_terminal_until_ctrl_c_and_exits_0(supervised: Supervised) -> None:
    master, slave = pty.openpty()
    env = {**supervised.env, "COLUMNS": "120", "LINES": "40"}
    proc = subprocess.Popen([sys.executable, "-m", "services.cli.main", "ps", "--watch", "--interval", "0.2"],
                            cwd=PROJECT_ROOT, env=env, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    try:
        seen = _read_until(master, lambda b: b.count(b"trader processes at") >= 3, 30)
        assert seen.count(b"trader processes at") >= 3, seen[-2000:]
        assert b"\x1b[" in seen, "a terminal gets the table redrawn in place (cursor moves)"
        assert b"supervisor" in seen and b"not shown for the terminal" in seen
        proc.send_signal(signal.SIGINT)
        _read_until(master, lambda b: False, 3 if proc.poll() is None else 0)
        assert proc.wait(15) == 0
    finally:
        _stop(proc)
        os.close(master)


def test_ps_watch_says_in_the_title_that_the_supervisor_does_not_answer_and_goes_on(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TRADER_")}, "TRADER_RUN_DIR": str(tmp_path),
           "COLUMNS": "100", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "services.cli.main", "ps", "--watch", "--interval", "0.1"],
                            cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        seen = _read_until(proc.stdout.fileno(), lambda b: b.count(b"supervisor not answering") >= 2, 30)
        assert seen.count(b"supervisor not answering") >= 2, seen
        assert proc.poll() is None, "the watch goes on while the supervisor is down"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
        assert b"Traceback" not in proc.stderr.read()  # type: ignore[union-attr]
    finally:
        _stop(proc)


def test_ps_watch_refuses_json(supervised: Supervised) -> None:
    out = supervised.trader("ps", "--watch", "--json")
    assert out.returncode == 2 and "--json" in out.stderr


@pytest.mark.slow
def test_reload_starts_an_enabled_agent_shown_by_agent_restarted_and_stopped_when_disabled(supervised: Supervised) -> None:
    assert supervised.ps()["sma-x"]["state"] == "disabled"
    supervised.roster.write_text(sma("sma-x", "005930", supervised.dp, enabled=True))
    out = supervised.trader("reload")
    assert out.returncode == 0, out.stderr
    assert "started: sma-x" in out.stdout and "stopped: -" in out.stdout
    row = wait_for(lambda: (r := supervised.ps().get("sma-x")) and r["state"] == "running" and r["pid"] and r, 30,
                   "sma-x running")
    agent = psutil.Process(row["pid"])

    # the running agent's own page, as `trader agent` shows it, and a restart that gives it a new pid
    status = wait_for(lambda: (o := supervised.trader("agent", "sma-x", "--json")).returncode == 0 and json.loads(o.stdout),
                      30, "sma-x's status page")
    assert status["agent_id"] == "sma-x" and status["pid"] == agent.pid
    out = supervised.trader("agent", "sma-x", columns=80)
    assert out.returncode == 0, out.stderr
    head, positions, orders = tables(out.stdout)
    assert f"pid {agent.pid}" in head.title and head.headers == []
    assert {r[0].strip(): r[1].strip() for r in head.rows}["cash_won"] == "50,000,000"
    assert_fits(positions, ["code", "qty", "avg price", "last", "break-even", "realised", "unrealised", "pending buy",
                            "pending sell"], ["code", "qty", "avg price", "last", "unrealised"], 80)
    assert orders.title == "open orders" and "client order id" in orders.headers
    out = supervised.trader("restart", "sma-x")
    assert out.returncode == 0, out.stderr
    row = wait_for(lambda: (r := supervised.ps().get("sma-x")) and r["state"] == "running" and r["pid"] not in (None, agent.pid)
                   and r, 30, "sma-x restarted")
    agent.wait(10)
    agent = psutil.Process(row["pid"])
    wait_for(lambda: (o := supervised.trader("agent", "sma-x", "--json")).returncode == 0
             and json.loads(o.stdout)["pid"] == agent.pid, 30, "the restarted sma-x's status page")

    supervised.roster.write_text(sma("sma-x", "005930", supervised.dp, enabled=False))
    out = supervised.trader("reload", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["stopped"] == ["sma-x"] and result["started"] == [] and result["problems"] == []
    wait_for(lambda: supervised.ps()["sma-x"]["state"] == "disabled", 30, "sma-x disabled")
    agent.wait(10)

    out = supervised.trader("reload", "--json")
    assert json.loads(out.stdout)["stopped"] == [], "a second reload of the same roster changes nothing"


@pytest.mark.slow
def test_reload_names_a_roster_problem(supervised: Supervised) -> None:
    good = supervised.roster.read_text()
    supervised.roster.write_text(good + sma("broken", "005930", supervised.dp).replace("sma_cross", "no_such_strategy"))
    try:
        out = supervised.trader("reload")
        assert out.returncode == 0, out.stderr
        assert "roster problem:" in out.stderr and "broken" in out.stderr
    finally:
        supervised.roster.write_text(good)
        supervised.trader("reload")


@pytest.mark.slow
def test_profile_samples_the_running_process_in_place(supervised: Supervised, tmp_path: Path) -> None:
    bus = psutil.Process(supervised.procs["bus"].pid)
    created = bus.create_time()
    svg = tmp_path / "bus.svg"
    out = supervised.trader("profile", "bus", "--seconds", "1", "--idle", "--top", "5", "--out", str(svg), columns=100)
    assert out.returncode == 0, out.stderr
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()
    (t,) = tables(out.stdout)
    assert t.headers == ["own %", "total %", "own", "total", "function"]
    assert 1 <= len(t.rows) <= 5
    functions = " ".join(r[-1] for r in t.rows)
    assert "bus/" in functions or "zmq/" in functions, functions
    assert f"pid {bus.pid}" in t.title
    raw = svg.with_suffix(".folded.txt")
    samples, ranked = top_functions(raw.read_text())
    assert samples > 0 and f"{samples} sample(s)" in t.title
    assert t.rows[0][-1].strip() == ranked[0][0]
    assert bus.is_running() and bus.create_time() == created, "nothing was restarted"
    assert supervised.ps()["bus"]["pid"] == bus.pid


# A small process of the test's own, registered as the stack's processes are (its pid lock in the run directory).
REGISTERED = """
import sys, time
from pathlib import Path
from bus.pidlock import PidLock, lock_path
lock = PidLock(lock_path(Path(sys.argv[1]), sys.argv[2]))
lock.acquire()
print("ready", flush=True)
def crunch_numbers():
    total = 0
    while True:
        for i in range(100_000):
            total += i * i
if sys.argv[3] == "busy":
    crunch_numbers()
time.sleep(600)
"""


def _registered(supervised: Supervised, name: str, mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", REGISTERED, str(supervised.run_dir), name, mode], cwd=PROJECT_ROOT,
                            env=supervised.env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.slow
def test_profile_of_a_busy_process_names_its_hot_function_and_leaves_it_running(supervised: Supervised,
                                                                                 tmp_path: Path) -> None:
    proc = _registered(supervised, "cruncher", "busy")
    try:
        out = supervised.trader("profile", "cruncher", "--seconds", "1", "--top", "3", "--out", str(tmp_path / "c.svg"),
                                columns=80)
        assert out.returncode == 0, out.stderr
        (t,) = tables(out.stdout)
        assert_fits(t, ["own %", "total %", "own", "total", "function"], ["own %", "total %", "function"], 80)
        assert "crunch_numbers (<string>" in t.rows[0][-1]
        assert float(t.rows[0][0]) > 50, "the busy loop is where the samples are"
        assert "crunch_numbers" in (tmp_path / "c.svg").read_text()
        assert proc.poll() is None, "the process keeps running"
    finally:
        proc.kill()
        proc.wait(5)


@pytest.mark.slow
def test_profile_of_a_process_that_only_waits_says_so_and_points_to_idle(supervised: Supervised) -> None:
    proc = _registered(supervised, "sleeper", "sleep")
    try:
        out = supervised.trader("profile", "sleeper", "--seconds", "1")
        assert out.returncode == 1, (out.stdout, out.stderr)
        assert "no sample of sleeper" in out.stderr and "--idle" in out.stderr
        out = supervised.trader("profile", "sleeper", "--seconds", "1", "--idle", "--top", "3", columns=120)
        assert out.returncode == 0, out.stderr
        assert "<module> (<string>" in out.stdout
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(5)


def test_profile_of_an_unknown_name_exits_2_and_of_a_stopped_process_3(supervised: Supervised) -> None:
    out = supervised.trader("profile", "no-such-process")
    assert out.returncode == 2 and "neither a Procfile process" in out.stderr
    out = supervised.trader("profile", "order-manager", "--seconds", "1")
    assert out.returncode == 3 and "order-manager is not running" in out.stderr and "--fresh" in out.stderr
    out = supervised.trader("profile", "sma-x", "--seconds", "1")
    assert out.returncode == 3 and "trader spawn sma-x" in out.stderr
    out = supervised.trader("profile", "bus", "--fresh")
    assert out.returncode == 3 and "is running" in out.stderr
    out = supervised.trader("profile", "bus", "--fresh", "--profiler", "perf")
    assert out.returncode == 2 and "cprofile or yappi" in out.stderr


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_profile_without_ptrace_permission_exits_4_and_says_what_to_do(supervised: Supervised) -> None:
    # Without CAP_SYS_PTRACE py-spy may not read a process that has more capabilities than it.
    out = supervised.trader("profile", "bus", "--seconds", "1", prefix=("setpriv", "--bounding-set=-sys_ptrace"))
    assert out.returncode == 4, (out.stdout, out.stderr)
    assert "permission denied" in out.stderr and "kernel.yama.ptrace_scope" in out.stderr
    assert supervised.procs["bus"].poll() is None


@pytest.mark.slow
def test_profile_fresh_runs_a_stopped_process_under_cprofile(supervised: Supervised) -> None:
    out = supervised.trader("profile", "risk-guard", "--fresh", "--profiler", "cprofile", "--seconds", "2",
                            "--top", "5", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "function calls" in out.stdout and "profile kept in" in out.stdout
    kept = Path(out.stdout.split("profile kept in")[-1].split()[0])
    assert kept.exists() and kept.suffix == ".prof"


def test_top_functions_counts_own_and_total_samples() -> None:
    folded = "main (a.py:1);work (a.py:5);inner (a.py:9) 6\nmain (a.py:1);work (a.py:5) 3\nmain (a.py:1);idle (b.py:2) 1\n"
    samples, ranked = top_functions(folded)
    assert samples == 10
    assert ranked[0] == ("inner (a.py:9)", 6, 6)
    by_function = {f: (own, total) for f, own, total in ranked}
    assert by_function["work (a.py:5)"] == (3, 9) and by_function["main (a.py:1)"] == (0, 10)


def test_profile_needs_no_stack_to_say_a_name_is_unknown(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TRADER_")}, "TRADER_RUN_DIR": str(tmp_path)}
    out = trader(env, "profile", "nothing-by-this-name")
    assert out.returncode == 2
