"""The market-data feed: board, link, recorder and replay units, then real processes.

The process tests start the real bus proxy, the real market-data process and a
feed publisher (the paper exchange when it is available, else a small real
publisher process binding the exchange's feed endpoint), all with a run
directory of their own, and stop every one of them even when a test fails.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from typer.testing import CliRunner

from bus.pubsub import Subscriber
from bus.rpc import RpcClient
from core.config import PROJECT_ROOT
from core.messages import Alert, Bar, Command, DayReference, SessionEvent, SessionPhase, Tick
from services.broker.base import ConnectionState
from services.market_data import recorder, replay
from services.market_data.board import MarketBoard, preferred_discount_pct
from services.market_data.link import Backoff, FeedLink, LinkAction

DAY0_OPEN_NS = 1_767_571_200_000_000_000  # 2026-01-05 09:00 KST, a trading day
MIN_NS = 60_000_000_000
HB_S = 0.2  # heartbeat interval in the process tests: a drop is noticed after 0.6 s of silence


def bar(code: str, minute: int, close: int, volume: int = 100, day_ns: int = DAY0_OPEN_NS) -> Bar:
    return Bar(code=code, ts_ns=day_ns + minute * MIN_NS, open=close, high=close + 100, low=close - 100, close=close, volume=volume, value_won=close * volume)


# --- the board -----------------------------------------------------------------


def test_board_keeps_last_tick_last_bars_and_session() -> None:
    board = MarketBoard(bars_kept=3, base_prices={"005930": 70_000})
    for m in range(5):
        board.apply(bar("005930", m, 70_000 + 100 * m))
    board.apply(Tick(code="005930", ts_ns=DAY0_OPEN_NS + 5 * MIN_NS, price=70_600, qty=10, cum_volume=555))
    board.apply(SessionEvent(phase=SessionPhase.OPEN, trading_date="20260105", ts_ns=DAY0_OPEN_NS))
    snap = board.snapshot()
    row = snap["codes"]["005930"]
    assert [b["close"] for b in row["bars"]] == [70_200, 70_300, 70_400]
    assert row["last"] == 70_600
    assert row["change"] == 600 and row["change_pct"] == pytest.approx(600 / 70_000 * 100, abs=1e-3)
    assert row["volume"] == 555
    assert row["vwap"] == round(sum(70_000 + 100 * m for m in range(5)) / 5)
    assert snap["session"]["phase"] == "open"
    assert board.snapshot(["000660"])["codes"]["000660"]["last"] is None


def test_board_rolls_base_price_to_the_previous_close_on_a_new_day() -> None:
    board = MarketBoard(base_prices={"005930": 70_000})
    board.apply(bar("005930", 380, 71_000))
    board.apply(SessionEvent(phase=SessionPhase.CLOSED, trading_date="20260105", ts_ns=DAY0_OPEN_NS + 400 * MIN_NS))
    board.apply(SessionEvent(phase=SessionPhase.PRE_OPEN, trading_date="20260106", ts_ns=DAY0_OPEN_NS + 1440 * MIN_NS))
    board.apply(bar("005930", 1440, 71_500))
    row = board.snapshot()["codes"]["005930"]
    assert row["base_price"] == 71_000 and row["change"] == 500
    assert row["vwap"] == 71_500  # the day's figures start again


def test_the_venues_reference_is_the_days_base_price_once_a_day_and_survives_the_roll() -> None:
    board = MarketBoard(base_prices={"005930": 70_000})  # the instrument master's close: maybe not the venue's
    board.apply(bar("005930", 380, 71_000))
    board.apply(SessionEvent(phase=SessionPhase.CLOSED, trading_date="20260105", ts_ns=DAY0_OPEN_NS + 400 * MIN_NS))
    ref = DayReference(code="005930", trading_date="20260106", ts_ns=DAY0_OPEN_NS + 1400 * MIN_NS,
                       base_price=70_900, lower_limit=49_650, upper_limit=92_100)
    assert board.apply(ref) is True  # told before the day's pre-open: kept through the roll
    assert board.apply(ref.model_copy(update={"ts_ns": ref.ts_ns + 1})) is False  # a repeat: not forwarded
    board.apply(SessionEvent(phase=SessionPhase.PRE_OPEN, trading_date="20260106", ts_ns=DAY0_OPEN_NS + 1440 * MIN_NS))
    row = board.snapshot()["codes"]["005930"]
    assert (row["base_price"], row["lower_limit"], row["upper_limit"]) == (70_900, 49_650, 92_100)
    stale = ref.model_copy(update={"trading_date": "20260105", "base_price": 1})
    assert board.apply(stale) is False and board.snapshot()["codes"]["005930"]["base_price"] == 70_900


def test_board_ignores_messages_that_are_not_market_data() -> None:
    board = MarketBoard()
    assert board.apply(Alert(level="info", source="x", kind="k", text="t", ts_ns=1)) is False
    assert board.codes() == []


def test_preferred_discount_is_measured_against_the_common() -> None:
    snap = {"codes": {"005930": {"last": 70_000}, "005935": {"last": 58_100}}}
    assert preferred_discount_pct(snap) == 17.0
    assert preferred_discount_pct({"codes": {"005930": {"last": 70_000}}}) is None


# --- the link ------------------------------------------------------------------


def test_backoff_grows_with_jitter_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(initial_s=0.1, max_s=2.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(10)]
    for k, d in enumerate(delays):
        base = min(2.0, 0.1 * 2**k)
        assert base / 2 <= d <= base
    assert len(set(delays[-4:])) == 4  # jittered, not lockstep
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_a_silent_feed_counts_as_dropped_and_is_reopened_after_backoff() -> None:
    link = FeedLink(silence_limit_s=3.0, backoff=Backoff(initial_s=1.0, max_s=8.0, rng=random.Random(0)))
    assert link.poll(0.0) is LinkAction.CONNECT
    link.connecting(0.0)
    assert link.state is ConnectionState.RECONNECTING
    assert link.frame_received(0.5) is True and link.state is ConnectionState.CONNECTED
    assert link.frame_received(1.0) is False
    assert link.poll(3.9) is LinkAction.NOTHING
    assert link.poll(4.1) is LinkAction.DROP and link.drops == 1
    assert link.state is ConnectionState.DISCONNECTED
    assert link.poll(4.2) is LinkAction.NOTHING  # waiting out the backoff
    assert link.poll(5.2) is LinkAction.CONNECT
    link.connecting(5.2)
    assert link.poll(8.3) is LinkAction.DROP  # the attempt heard nothing either
    assert link.drops == 1 and link.state is ConnectionState.DISCONNECTED
    # its subscription delivers a moment later, while the link waits to retry: connected now, no new subscription
    assert link.frame_received(8.5) is True and link.state is ConnectionState.CONNECTED
    assert link.poll(8.6) is LinkAction.NOTHING


# --- the recorder and replay ------------------------------------------------------


def test_recorded_bars_read_back_equal_in_parquet_and_csv(tmp_path: Path) -> None:
    bars = [bar("005930", m, 70_000 + 100 * m) for m in range(5)] + [bar("005935", m, 58_000) for m in range(3)]
    for fmt in recorder.FORMATS:
        paths = recorder.write_bars(tmp_path / fmt, bars, fmt)
        assert [p.relative_to(tmp_path / fmt).as_posix() for p in paths] == [f"20260105/005930.{fmt}", f"20260105/005935.{fmt}"]
        assert recorder.read_bars(paths[0]) == bars[:5]
        assert recorder.read_day(tmp_path / fmt, "20260105")["005935"] == bars[5:]
    assert pq_compression(tmp_path / "parquet" / "20260105" / "005930.parquet") == "ZSTD"


def pq_compression(path: Path) -> str:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.row_group(0).column(0).compression


def test_a_second_write_merges_and_a_corrected_bar_replaces_the_first(tmp_path: Path) -> None:
    rec = recorder.BarRecorder(tmp_path)
    rec.add(bar("005930", 0, 70_000))
    rec.add(bar("005930", 1, 70_100))
    rec.flush()
    rec.add(bar("005930", 1, 70_200))  # corrected
    rec.add(bar("005930", 2, 70_300))
    assert rec.pending == 2
    rec.flush()
    closes = [b.close for b in recorder.read_bars(recorder.bar_path(tmp_path, "20260105", "005930"))]
    assert closes == [70_000, 70_200, 70_300] and rec.pending == 0


def test_day_folders_older_than_retention_are_purged(tmp_path: Path) -> None:
    for name in ("20260101", "20260102", "20260105", "20260110", "notaday"):
        (tmp_path / name).mkdir()
    removed = recorder.purge_days(tmp_path, dt.date(2026, 1, 10), retention_days=6)
    assert sorted(p.name for p in removed) == ["20260101", "20260102"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20260105", "20260110", "notaday"]


def test_replay_paces_bars_by_market_time_and_skips_the_night(tmp_path: Path) -> None:
    day1 = DAY0_OPEN_NS + 1440 * MIN_NS
    recorder.write_bars(tmp_path, [bar("005930", m, 70_000 + m) for m in range(3)] + [bar("005930", m, 71_000 + m, day_ns=day1) for m in range(2)])
    cursor = replay.ReplayCursor(replay.load_feed(tmp_path), speed=60.0)  # one market minute per wall second
    first = cursor.due(0.0)
    assert [type(m).__name__ for _, m in first] == ["SessionEvent"]
    assert [m.close for _, m in cursor.due(2.0)] == [70_000, 70_001]  # bars come at their close
    rest = cursor.due(3.0)
    assert [getattr(m, "close", getattr(m, "phase", None)) for _, m in rest] == [70_002, SessionPhase.CLOSED, SessionPhase.OPEN]
    assert cursor.due(3.5) == []  # the night passed in no time; the next bar closes a minute after the open
    last_day = cursor.due(5.0)
    assert [getattr(m, "close", getattr(m, "phase", None)) for _, m in last_day] == [71_000, 71_001, SessionPhase.CLOSED]
    assert cursor.finished


# --- real processes ------------------------------------------------------------

FEED_SCRIPT = r"""
import os, sys, time, zmq
from bus.pubsub import Publisher
from core.config import load_stack
from core.messages import Bar, Heartbeat, SessionEvent, SessionPhase, Tick
settings = load_stack()
close_after, garbage = int(sys.argv[1]), sys.argv[2] == "garbage"
go_file = sys.argv[3]  # bars start once it exists ('' = at once): no bar goes out before a subscriber joined
ctx = zmq.Context()
pub = Publisher(ctx, settings.endpoint("exchange_feed"), "exchange", bind=True)
day0, hb_every = %d, settings.market_data.feed_heartbeat_s
next_hb, i, minute = 0.0, 0, 0
while True:
    now = time.monotonic()
    if now >= next_hb:
        next_hb = now + hb_every
        if minute < close_after or close_after == 0:  # the phase is repeated for late joiners
            pub.publish("md.session", SessionEvent(phase=SessionPhase.OPEN, trading_date="20260105", ts_ns=day0))
        pub.publish("sys.heartbeat.venue", Heartbeat(name="exchange", pid=0, ts_ns=time.time_ns(), info=pub.heartbeat_info()))
    i += 1
    if minute < close_after or close_after == 0:
        for code, px in (("005930", 70000), ("005935", 58000)):
            pub.publish("md.tick." + code, Tick(code=code, ts_ns=day0 + i, price=px + 100 * (i %% 5), qty=1, cum_volume=i))
        if i %% 4 == 0 and (not go_file or os.path.exists(go_file)):
            for code, px in (("005930", 70000), ("005935", 58000)):
                c = px + 100 * (minute %% 7)
                pub.publish("md.bar.1m." + code, Bar(code=code, ts_ns=day0 + minute * 60_000_000_000, open=c, high=c, low=c, close=c, volume=10 + minute, value_won=c * (10 + minute)))
            minute += 1
            if minute == close_after:
                pub.publish("md.session", SessionEvent(phase=SessionPhase.CLOSED, trading_date="20260105", ts_ns=day0 + minute * 60_000_000_000))
    if garbage:
        pub.socket.send(b"md.tick.005930\x00\xc1\xc1 not msgpack")
        pub.socket.send(b"md.tick.005930 no separator at all")
    time.sleep(0.05)
""" % DAY0_OPEN_NS


class Stack:
    """The processes of one test, in a short run directory (ipc paths are length-limited)."""

    def __init__(self) -> None:
        self.run_dir = Path(tempfile.mkdtemp(prefix="md-", dir="/tmp"))
        (self.run_dir / "run").mkdir()
        self.env = {
            **os.environ,
            "TRADER_RUN_DIR": str(self.run_dir),
            "TRADER_BUS__HEARTBEAT_INTERVAL_S": str(HB_S),
            "TRADER_MARKET_DATA__FEED_HEARTBEAT_S": str(HB_S),
            "TRADER_MARKET_DATA__BACKOFF_MAX_S": "0.5",
            "TRADER_CLOCK__SPEED": "600",
            "PYTHONUNBUFFERED": "1",
        }
        self.procs: dict[str, subprocess.Popen] = {}
        self.ctx = zmq.Context()

    def endpoint(self, name: str) -> str:
        return f"ipc://{self.run_dir}/run/{name.replace('_', '-')}.sock"

    def start(self, name: str, args: list[str], **env: str) -> subprocess.Popen:
        log = open(self.run_dir / f"{name}.log", "ab")
        proc = subprocess.Popen([sys.executable, *args], cwd=PROJECT_ROOT, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def start_feed(self, close_after: int = 0, garbage: bool = False, go_file: Path | None = None) -> None:
        """Start the feed; with ``go_file`` it publishes no bar until that file exists."""
        self.start("feed", ["-c", FEED_SCRIPT, str(close_after), "garbage" if garbage else "clean",
                            str(go_file or "")])

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def rpc(self, name: str, **args: Any) -> Any:
        client = RpcClient(self.ctx, self.endpoint("market_data_rpc"), timeout_ms=1000, retries=1)
        try:
            reply = client.call(Command(command_id=uuid.uuid4().hex, name=name, args=args))
        finally:
            client.close()
        assert reply.ok, reply.error
        return reply.result

    def log(self, name: str) -> str:
        path = self.run_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        self.ctx.destroy(linger=0)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = pred()
        except Exception as exc:  # the server may not be up yet
            value, last_error = None, exc
        else:
            last_error = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last error: {last_error})")
        time.sleep(0.05)


@pytest.fixture
def stack() -> Iterator[Stack]:
    s = Stack()
    try:
        s.start("bus", ["-m", "bus.proxy"])
        yield s
    finally:
        logs = {name: s.log(name)[-3000:] for name in ("market-data", "feed", "bus")}
        s.close()
        for name, text in logs.items():
            sys.stderr.write(f"--- {name} log ---\n{text}\n")


def bus_subscriber(stack: Stack, topics: list[str]) -> Subscriber:
    sub = Subscriber(stack.ctx, stack.endpoint("bus_out"), topics)
    wait_until(lambda: (stack.run_dir / "run" / "bus-out.sock").exists(), what="the bus proxy")
    return sub


def received(sub: Subscriber, pred: Callable[[Any], bool], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        env = sub.recv(timeout_ms=100)
        if env is not None and pred(env):
            return env
    raise AssertionError("expected message did not arrive on the bus")


def test_ticks_and_bars_flow_from_the_feed_through_market_data_onto_the_bus(stack: Stack) -> None:
    sub = bus_subscriber(stack, ["md."])
    stack.start_feed()
    stack.start("market-data", ["-m", "services.market_data"])
    tick = received(sub, lambda e: e.topic == "md.tick.005930")
    assert tick.sender == "market-data" and isinstance(tick.msg, Tick)
    bar_env = received(sub, lambda e: e.topic == "md.bar.1m.005935")
    assert isinstance(bar_env.msg, Bar) and bar_env.msg.code == "005935"
    status = stack.rpc("status")
    assert status["feed"] == "connected" and status["counts"]["tick"] > 0


def test_a_late_subscriber_gets_the_snapshot_over_rpc(stack: Stack) -> None:
    stack.start_feed()
    stack.start("market-data", ["-m", "services.market_data"])
    wait_until(lambda: len(stack.rpc("snapshot", codes=["005930"])["codes"]["005930"]["bars"]) >= 2, what="bars on the board")
    snap = stack.rpc("snapshot", codes=["005930", "005935"], bars=1)
    assert set(snap["codes"]) == {"005930", "005935"}
    row = snap["codes"]["005930"]
    assert row["last"] >= 70_000 and len(row["bars"]) == 1 and row["tick"]["code"] == "005930"
    assert snap["session"]["phase"] == "open" and snap["feed"] == "connected"
    client = RpcClient(stack.ctx, stack.endpoint("market_data_rpc"), timeout_ms=1000, retries=0)
    refused = client.call(Command(command_id="x1", name="snapshot", args={"bars": -1}))
    unknown = client.call(Command(command_id="x2", name="dance"))
    client.close()
    assert (refused.ok, refused.reason_code) == (False, "BAD_ARGS")
    assert (unknown.ok, unknown.reason_code) == (False, "UNKNOWN_COMMAND")


def test_market_data_reconnects_after_the_feed_is_killed_and_restarted(stack: Stack) -> None:
    alerts = bus_subscriber(stack, ["sys.alert", "md.tick."])
    stack.start_feed()
    stack.start("market-data", ["-m", "services.market_data"])
    wait_until(lambda: stack.rpc("status")["feed"] == "connected", what="the feed to connect")
    stack.stop("feed", signal.SIGKILL)
    dropped = received(alerts, lambda e: isinstance(e.msg, Alert) and e.msg.kind == "feed_dropped")
    assert dropped.msg.source == "market-data"
    assert stack.rpc("status")["drops"] == 1
    stack.start_feed()
    received(alerts, lambda e: isinstance(e.msg, Alert) and e.msg.kind == "feed_recovered")
    wait_until(lambda: stack.rpc("status")["feed"] == "connected", what="the feed to reconnect")
    alerts.drain()
    received(alerts, lambda e: e.topic.startswith("md.tick."))


def test_garbage_frames_on_the_feed_are_counted_and_survived(stack: Stack) -> None:
    sub = bus_subscriber(stack, ["md.tick."])
    stack.start_feed(garbage=True)
    stack.start("market-data", ["-m", "services.market_data"])
    status = wait_until(lambda: (s := stack.rpc("status"))["garbage"] >= 20 and s, what="garbage to be counted")
    assert status["garbage_by_reason"].keys() >= {"BAD_MSGPACK", "NO_TOPIC_SEPARATOR"}
    sub.drain()
    received(sub, lambda e: e.topic == "md.tick.005930")
    assert stack.procs["market-data"].poll() is None


def test_bars_are_recorded_at_the_close_and_read_back_equal(stack: Stack) -> None:
    sub = bus_subscriber(stack, ["md.bar.1m.005930", "md.session", "md.tick.005930"])
    stack.start("market-data", ["-m", "services.market_data"])
    wait_until(lambda: stack.rpc("status"), what="market-data to answer")
    go = stack.run_dir / "go"
    stack.start_feed(close_after=4, go_file=go)
    # A bar published before the subscriptions along feed -> market-data -> bus -> here
    # are in place is lost (ZeroMQ's slow joiner): bars start once the feed's ticks
    # come all the way.
    received(sub, lambda e: isinstance(e.msg, Tick))
    go.touch()
    seen: list[Bar] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        env = sub.recv(timeout_ms=100)
        if env is None:
            continue
        if isinstance(env.msg, Bar):
            seen.append(env.msg)
        elif isinstance(env.msg, SessionEvent) and env.msg.phase is SessionPhase.CLOSED:
            break
    assert len(seen) == 4
    path = recorder.bar_path(stack.run_dir / "bars", "20260105", "005930")
    wait_until(path.exists, what="the day's bar file")
    assert recorder.read_bars(path) == seen


def test_pending_bars_are_written_on_stop(stack: Stack) -> None:
    stack.start_feed()
    stack.start("market-data", ["-m", "services.market_data"])
    wait_until(lambda: stack.rpc("status")["pending_bars"] >= 4, what="bars to arrive")
    stack.stop("market-data")
    bars = recorder.read_day(stack.run_dir / "bars", "20260105")
    assert set(bars) == {"005930", "005935"} and len(bars["005930"]) >= 2


def test_bars_reach_their_file_before_the_close_and_a_restarted_market_data_serves_them(stack: Stack) -> None:
    stack.start_feed()
    stack.start("market-data", ["-m", "services.market_data"])
    path = recorder.bar_path(stack.run_dir / "bars", "20260105", "005930")
    wait_until(lambda: path.exists() and len(recorder.read_bars(path)) >= 3, timeout=20,
               what="bars written during the day (no close yet)")
    maps = Path(f"/proc/{stack.procs['market-data'].pid}/maps").read_text()
    assert "/pandas/" not in maps, "bars written and merged with Arrow alone: pandas never loaded"
    stack.stop("market-data", signal.SIGKILL)  # no flush on the way out
    on_disk = recorder.read_bars(path)
    stack.start("market-data", ["-m", "services.market_data"])
    snap = wait_until(lambda: stack.rpc("snapshot", codes=["005930"], bars=390), what="the restarted market-data")
    served = [b["ts_ns"] for b in snap["codes"]["005930"]["bars"]]
    assert [b.ts_ns for b in on_disk] == served[:len(on_disk)]


# --- the command line ---------------------------------------------------------


def test_trader_sim_writes_one_file_per_day_per_code(tmp_path: Path) -> None:
    from services.cli.main import app

    result = CliRunner().invoke(app, ["sim", "--days", "2", "--codes", "005930,000660", "--seed", "7", "--out", str(tmp_path), "--start", "2026-01-05", "--format", "csv"])
    assert result.exit_code == 0, result.output
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.csv"))
    assert files == ["20260105/000660.csv", "20260105/005930.csv", "20260106/000660.csv", "20260106/005930.csv",
                     "flows.csv", "fundamentals.csv"]
    bars = recorder.read_bars(tmp_path / "20260105" / "005930.csv")
    assert len(bars) > 300 and all(b.low <= b.close <= b.high for b in bars)


def test_trader_sim_refuses_a_code_not_in_the_master(tmp_path: Path) -> None:
    from services.cli.main import app

    result = CliRunner().invoke(app, ["sim", "--codes", "999990", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "999990" in result.output


def test_trader_market_says_how_to_start_market_data_when_it_is_down(tmp_path: Path) -> None:
    env = {**os.environ, "TRADER_RUN_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "services.cli.main", "market"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "not running" in done.stderr and "python -m services.market_data" in done.stderr


def test_trader_market_prints_the_board_from_a_replay(stack: Stack, tmp_path: Path) -> None:
    recorder.write_bars(tmp_path, [bar("005930", m, 69_800 + 100 * m) for m in range(3)] + [bar("005935", m, 58_100) for m in range(3)])
    stack.start("market-data", ["-m", "services.market_data"], TRADER_MARKET_DATA__SOURCE="replay", TRADER_MARKET_DATA__REPLAY_DIR=str(tmp_path), TRADER_MARKET_DATA__REPLAY_SPEED="0")
    wait_until(lambda: stack.rpc("status")["feed"] == "replay_finished", what="the replay to finish")
    env = {**stack.env, "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "services.cli.main", "market"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "70,000" in done.stdout and "005935 trades at a 17.00% discount to 005930" in done.stdout
    as_json = subprocess.run([sys.executable, "-m", "services.cli.main", "market", "--json"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60)
    import json

    data = json.loads(as_json.stdout)
    assert data["codes"]["005930"]["last"] == 70_000 and data["preferred_discount_pct"] == 17.0


# --- with the paper exchange ---------------------------------------------------------

EXCHANGE_ENV = {"TRADER_MARKET_DATA__FEED_HEARTBEAT_S": "1.0", "TRADER_MARKET__CODES": '["005930","005935"]'}


def start_exchange_and_market_data(stack: Stack) -> None:
    pytest.importorskip("services.exchange.service")
    stack.env.update(EXCHANGE_ENV)
    stack.start("exchange", ["-m", "services.exchange"])
    stack.start("market-data", ["-m", "services.market_data"])


def exchange_fault(stack: Stack, **args: Any) -> Any:
    client = RpcClient(stack.ctx, stack.endpoint("exchange_rpc"), timeout_ms=2000, retries=1)
    try:
        return client.call(Command(command_id=uuid.uuid4().hex, name="fault", args=args))
    finally:
        client.close()


@pytest.mark.slow
def test_exchange_data_flows_and_market_data_recovers_from_a_disconnect_and_a_restart(stack: Stack) -> None:
    """One exchange start for three behaviours: the exchange's start-up dominates the time."""
    sub = bus_subscriber(stack, ["md.", "sys.alert"])
    start_exchange_and_market_data(stack)

    # Ticks and bars flow from the exchange through market data onto the bus.
    tick = received(sub, lambda e: e.topic.startswith("md.tick."), timeout=30)
    assert tick.sender == "market-data" and tick.msg.code in {"005930", "005935"}
    assert isinstance(received(sub, lambda e: e.topic.startswith("md.bar.1m."), timeout=20).msg, Bar)
    snap = wait_until(lambda: (s := stack.rpc("snapshot", bars=1))["feed"] == "connected" and s,
                      what="the feed connected")
    assert snap["codes"]["005930"]["last"] > 0

    # An injected disconnect: the feed goes silent with its socket open.
    assert exchange_fault(stack, kind="disconnect", seconds=5).ok
    received(sub, lambda e: isinstance(e.msg, Alert) and e.msg.kind == "feed_dropped", timeout=15)
    assert stack.rpc("status")["feed"] != "connected"
    received(sub, lambda e: isinstance(e.msg, Alert) and e.msg.kind == "feed_recovered", timeout=20)
    assert stack.rpc("status")["drops"] == 1

    # The exchange killed and started again.
    stack.stop("exchange", signal.SIGKILL)
    received(sub, lambda e: isinstance(e.msg, Alert) and e.msg.kind == "feed_dropped", timeout=15)
    stack.start("exchange", ["-m", "services.exchange"])
    received(sub, lambda e: isinstance(e.msg, Alert) and e.msg.kind == "feed_recovered", timeout=30)
    sub.drain()
    received(sub, lambda e: e.topic.startswith("md.tick."), timeout=15)
    status = stack.rpc("status")
    assert status["feed"] == "connected" and status["drops"] == 2


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_side_tables_merge_by_key_in_order_and_read_back_in_pandas_as_written(tmp_path: Path, fmt: str) -> None:
    import pandas as pd

    def flow(ts: int, code: str, foreign: int, provisional: bool = False) -> dict[str, object]:
        return {"ts_ns": ts, "code": code, "foreign_net_qty": foreign, "institution_net_qty": -foreign,
                "individual_net_qty": 0, "provisional": provisional}

    recorder.write_side_table(tmp_path, "flows", [flow(20, "005930", 5, True), flow(10, "000660", 7)], fmt)
    path = recorder.write_side_table(tmp_path, "flows", [flow(20, "005930", 9), flow(10, "005930", 1)], fmt)
    back = pd.read_csv(path, dtype={"code": str}) if fmt == "csv" else pd.read_parquet(path)
    assert back.to_dict("records") == [flow(10, "000660", 7), flow(10, "005930", 1), flow(20, "005930", 9)], \
        "the later report of (ts_ns, code) replaces the earlier; sorted by time, then code"
    funds = [{"ts_ns": 5, "code": "005930", "effective_date": "20250102", "eps": 100, "bps": 900, "dps": 10,
              "source": "sim"}]
    recorder.write_side_table(tmp_path, "fundamentals", funds, fmt)
    again = recorder.write_side_table(tmp_path, "fundamentals", [{**funds[0], "ts_ns": 6, "eps": 120}], fmt)
    rows = (pd.read_csv(again, dtype={"code": str, "effective_date": str}) if fmt == "csv"
            else pd.read_parquet(again)).to_dict("records")
    assert rows == [{**funds[0], "ts_ns": 6, "eps": 120}], "keyed by (code, effective_date)"


def test_a_side_table_pandas_wrote_merges_with_new_rows(tmp_path: Path) -> None:
    import pandas as pd

    old = {"ts_ns": 1, "code": "005930", "foreign_net_qty": 3, "institution_net_qty": 0, "individual_net_qty": 0,
           "provisional": False}
    pd.DataFrame([old]).to_parquet(tmp_path / "flows.parquet", index=False)
    path = recorder.write_side_table(tmp_path, "flows", [{**old, "ts_ns": 2}])
    assert pd.read_parquet(path)["ts_ns"].tolist() == [1, 2]
