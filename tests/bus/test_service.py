"""The Service base in real processes: one instance per name, heartbeats, alerts, clean shutdown."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import zmq

from bus.pubsub import Subscriber
from bus.rpc import RpcClient
from bus.service import EXIT_LOCK_HELD, EXIT_OK
from core.config import StackSettings
from core.messages import Alert, AlertLevel, Command, Heartbeat
from tests.bus.conftest import Spawn, ipc_path, wait_for_socket

SHUTDOWN_BOUND_S = 5.0


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def start_counter(spawn: Spawn, settings: StackSettings, **env: str) -> subprocess.Popen:
    proc = spawn("tests.bus.counter_service", env=env)
    wait_for_socket(ipc_path(settings, "supervisor_rpc"), proc)
    return proc


def start_bus(spawn: Spawn, settings: StackSettings) -> subprocess.Popen:
    proc = spawn("bus.proxy")
    wait_for_socket(ipc_path(settings, "bus_out"), proc)
    return proc


def test_a_second_instance_is_refused_while_the_first_holds_the_lock(
    ctx: zmq.Context, spawn: Spawn, settings: StackSettings
) -> None:
    first = start_counter(spawn, settings)
    second = spawn("tests.bus.counter_service")
    assert second.wait(timeout=SHUTDOWN_BOUND_S * 2) == EXIT_LOCK_HELD
    log = second.log_path.read_text()  # type: ignore[attr-defined]
    assert f"held by pid {first.pid}" in log
    assert first.poll() is None  # the first one keeps its endpoint
    client = RpcClient(ctx, settings.endpoint("supervisor_rpc"))
    assert client.call(Command(command_id="x", name="echo")).ok


def test_a_lock_left_by_a_killed_instance_is_taken_over(spawn: Spawn, settings: StackSettings) -> None:
    first = start_counter(spawn, settings)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=5)
    lock_file = settings.run_path / "run" / "counter.pid"
    assert lock_file.exists()
    ipc_path(settings, "supervisor_rpc").unlink()
    second = start_counter(spawn, settings)
    assert str(second.pid) in lock_file.read_text()
    assert "taking over stale lock" in second.log_path.read_text()  # type: ignore[attr-defined]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_service_cleanly_and_quickly(spawn: Spawn, settings: StackSettings, sig: signal.Signals) -> None:
    proc = start_counter(spawn, settings)
    lock_file = settings.run_path / "run" / "counter.pid"
    assert lock_file.exists()
    started = time.monotonic()
    proc.send_signal(sig)
    assert proc.wait(timeout=SHUTDOWN_BOUND_S) == EXIT_OK
    assert time.monotonic() - started < SHUTDOWN_BOUND_S
    assert not lock_file.exists()


def test_the_proxy_stops_cleanly_on_sigterm(spawn: Spawn, settings: StackSettings) -> None:
    proxy = start_bus(spawn, settings)
    proxy.send_signal(signal.SIGTERM)
    assert proxy.wait(timeout=SHUTDOWN_BOUND_S) == EXIT_OK
    assert not (settings.run_path / "run" / "bus.pid").exists()


def test_shutdown_does_not_wait_for_an_absent_bus(spawn: Spawn, settings: StackSettings) -> None:
    # No proxy runs: heartbeats pile up unsent, and LINGER must still bound the exit.
    proc = start_counter(spawn, settings, TRADER_BUS__HEARTBEAT_INTERVAL_S="0.01")
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=SHUTDOWN_BOUND_S) == EXIT_OK


def test_a_service_can_stop_itself(ctx: zmq.Context, spawn: Spawn, settings: StackSettings) -> None:
    proc = start_counter(spawn, settings)
    RpcClient(ctx, settings.endpoint("supervisor_rpc")).call(Command(command_id="s", name="stop"))
    assert proc.wait(timeout=SHUTDOWN_BOUND_S) == EXIT_OK


def test_heartbeats_and_alerts_reach_subscribers(ctx: zmq.Context, spawn: Spawn, settings: StackSettings) -> None:
    start_bus(spawn, settings)
    proc = start_counter(spawn, settings, TRADER_BUS__HEARTBEAT_INTERVAL_S="0.1")
    sub = Subscriber(ctx, settings.endpoint("bus_out"), ["sys."])
    deadline = time.monotonic() + 10
    heartbeat = None
    while heartbeat is None and time.monotonic() < deadline:
        env = sub.recv(100)
        if env is not None and env.topic == "sys.heartbeat.counter":
            heartbeat = env.msg
    assert isinstance(heartbeat, Heartbeat)
    assert heartbeat.pid == proc.pid and heartbeat.name == "counter" and heartbeat.state == "running"
    assert heartbeat.rss_bytes > 0 and "seqs" in heartbeat.info
    client = RpcClient(ctx, settings.endpoint("supervisor_rpc"))
    client.call(Command(command_id="a", name="alert", args={"level": "error", "kind": "test", "text": "disk full"}))
    alert = None
    while alert is None and time.monotonic() < deadline:
        env = sub.recv(100)
        if env is not None and env.topic == "sys.alert":
            alert = env.msg
    assert isinstance(alert, Alert)
    assert (alert.level, alert.source, alert.kind, alert.text) == (AlertLevel.ERROR, "counter", "test", "disk full")
    assert sub.missed == 0


def heartbeats_for(sub: Subscriber, seconds: float) -> list[tuple[float, Heartbeat]]:
    """The counter's heartbeats heard in ``seconds``, with when each arrived."""
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        env = sub.recv(50)
        if env is not None and env.topic == "sys.heartbeat.counter":
            out.append((time.monotonic(), env.msg))
    return out


def test_an_idle_service_skips_heartbeats_with_nothing_new_and_says_how_long_the_next_may_take(
    ctx: zmq.Context, spawn: Spawn, settings: StackSettings
) -> None:
    start_bus(spawn, settings)
    start_counter(spawn, settings, TRADER_BUS__HEARTBEAT_INTERVAL_S="0.1", TRADER_BUS__IDLE_HEARTBEAT_INTERVALS="8")
    sub = Subscriber(ctx, settings.endpoint("bus_out"), ["sys.heartbeat.counter"])
    client = RpcClient(ctx, settings.endpoint("supervisor_rpc"))
    busy = heartbeats_for(sub, 1.0)
    assert len(busy) >= 5 and {hb.interval_s for _, hb in busy} == {0.1}
    assert client.call(Command(command_id="i1", name="idle", args={"on": True})).ok
    heartbeats_for(sub, 0.3)  # the one that tells the service went idle
    idle = heartbeats_for(sub, 2.5)
    assert 2 <= len(idle) <= 5, [round(t, 2) for t, _ in idle]  # one per 0.8 s, not ten a second
    assert {hb.interval_s for _, hb in idle} == {0.8}
    gaps = [b[0] - a[0] for a, b in zip(idle, idle[1:])]
    assert all(g > 0.5 for g in gaps), gaps
    # Something published is news: its sequence number goes out with the next heartbeat, not 0.8 s later.
    sent_at = time.monotonic()
    last_seq = client.call(Command(command_id="p1", name="publish", args={"topic": "md.tick.005930", "count": 1})).result
    told = [(t, hb) for t, hb in heartbeats_for(sub, 1.0) if hb.info["seqs"].get("md.tick.005930") == 1]
    assert told and told[0][0] - sent_at < 0.75 and last_seq >= 1
    assert client.call(Command(command_id="i2", name="idle", args={"on": False})).ok
    heartbeats_for(sub, 0.3)
    assert len(heartbeats_for(sub, 1.0)) >= 5
