"""Pub/sub: sequence numbers per stream, gap and tail-drop detection, real processes via the proxy."""

from __future__ import annotations

import time

import pytest
import zmq

from bus.codec import encode
from bus.pubsub import Publisher, Subscriber
from bus.rpc import RpcClient
from core.config import StackSettings
from core.messages import Command, Heartbeat, Tick
from tests.bus.conftest import Spawn, ipc_path, wait_for_socket

TOPIC = "md.tick.005930"


def tick(i: int) -> Tick:
    return Tick(code="005930", ts_ns=i, price=70_000, qty=1)


def heartbeat(seqs: dict[str, int]) -> Heartbeat:
    return Heartbeat(name="feed", pid=1, ts_ns=0, info={"seqs": seqs})


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def gaps() -> list[tuple[str, str, int, int]]:
    return []


@pytest.fixture
def sub(ctx: zmq.Context, gaps: list) -> Subscriber:
    return Subscriber(ctx, "inproc://sub-test", ["md.tick."], bind=True, on_gap=lambda *g: gaps.append(g))


def test_consecutive_numbers_are_not_a_gap(sub: Subscriber, gaps: list) -> None:
    for seq in range(1, 6):
        assert sub.handle_frame(encode(TOPIC, "feed", seq, tick(seq))) is not None
    assert (sub.received, sub.missed, gaps) == (5, 0, [])


def test_a_late_joiner_does_not_count_what_came_before_it(sub: Subscriber, gaps: list) -> None:
    sub.handle_frame(encode(TOPIC, "feed", 500, tick(500)))
    sub.handle_frame(encode(TOPIC, "feed", 501, tick(501)))
    assert (sub.missed, gaps) == (0, [])


def test_a_jump_in_numbers_reports_the_missing_range(sub: Subscriber, gaps: list) -> None:
    sub.handle_frame(encode(TOPIC, "feed", 1, tick(1)))
    sub.handle_frame(encode(TOPIC, "feed", 5, tick(5)))
    assert sub.missed == 3
    assert gaps == [("feed", TOPIC, 2, 4)]


def test_streams_are_tracked_per_sender_and_topic(sub: Subscriber, gaps: list) -> None:
    sub.handle_frame(encode(TOPIC, "feed", 1, tick(1)))
    sub.handle_frame(encode(TOPIC, "replay", 1, tick(1)))
    sub.handle_frame(encode("md.tick.000660", "feed", 1, tick(1)))
    sub.handle_frame(encode(TOPIC, "feed", 2, tick(2)))
    sub.handle_frame(encode(TOPIC, "replay", 2, tick(2)))
    assert (sub.missed, gaps) == (0, [])


def test_heartbeat_reveals_drops_after_the_last_message(sub: Subscriber, gaps: list) -> None:
    sub.handle_frame(encode(TOPIC, "feed", 1, tick(1)))
    sub.handle_frame(encode(TOPIC, "feed", 2, tick(2)))
    hidden = sub.handle_frame(encode("sys.heartbeat.feed", "feed", 1, heartbeat({TOPIC: 7, "md.tick.000660": 3})))
    assert hidden is None  # the caller did not subscribe to heartbeats
    assert sub.missed == 5
    assert gaps == [("feed", TOPIC, 3, 7)]
    # the tail is counted once: the next message continues after it
    sub.handle_frame(encode(TOPIC, "feed", 8, tick(8)))
    assert sub.missed == 5


def test_a_heartbeat_from_another_process_of_a_sender_reports_its_restart_once(ctx: zmq.Context) -> None:
    restarts: list[str] = []
    sub = Subscriber(ctx, "inproc://restart-test", ["md.tick."], bind=True, on_restart=restarts.append)
    for seq, pid in ((1, 100), (2, 100), (1, 200), (2, 200)):
        sub.handle_frame(encode("sys.heartbeat.feed", "feed", seq, Heartbeat(name="feed", pid=pid, ts_ns=0, info={})))
    assert restarts == ["feed"]  # the first heartbeat is only learnt; the pid's change is the restart


def test_heartbeats_are_delivered_when_subscribed(ctx: zmq.Context) -> None:
    sub = Subscriber(ctx, "inproc://hb-test", ["sys.heartbeat."], bind=True)
    env = sub.handle_frame(encode("sys.heartbeat.feed", "feed", 1, heartbeat({})))
    assert env is not None and isinstance(env.msg, Heartbeat)


def test_a_restarted_sender_starts_a_new_stream(sub: Subscriber, gaps: list) -> None:
    for seq in (1, 2, 3):
        sub.handle_frame(encode(TOPIC, "feed", seq, tick(seq)))
    sub.handle_frame(encode(TOPIC, "feed", 1, tick(1)))
    sub.handle_frame(encode(TOPIC, "feed", 2, tick(2)))
    assert (sub.received, sub.missed, gaps) == (5, 0, [])


def test_publisher_numbers_each_topic_from_one(ctx: zmq.Context) -> None:
    pub = Publisher(ctx, "inproc://pub-test", "feed", bind=True)
    assert [pub.publish(TOPIC, tick(1)), pub.publish(TOPIC, tick(2)), pub.publish("md.tick.000660", tick(1))] == [1, 2, 1]
    assert pub.last_seq == 3
    assert pub.heartbeat_info() == {"seqs": {TOPIC: 2, "md.tick.000660": 1}}


def test_in_process_publisher_to_subscriber(ctx: zmq.Context) -> None:
    sub = Subscriber(ctx, "inproc://direct", ["md.tick."], bind=True)
    pub = Publisher(ctx, "inproc://direct", "feed")
    deadline = time.monotonic() + 5
    while sub.recv(10) is None:  # until the subscription has reached the publisher
        pub.publish("md.tick.warmup", tick(0))
        assert time.monotonic() < deadline
    sub.drain()
    pub.publish("risk.state", tick(0))  # filtered out by the subscription
    for i in range(1, 101):
        pub.publish(TOPIC, tick(i))
    got = []
    while len(got) < 100 and (env := sub.recv(1000)) is not None:
        got.append(env.seq)
    assert got == list(range(1, 101))
    assert sub.recv(50) is None


def test_heartbeats_from_names_whose_heartbeats_reach_the_socket(ctx: zmq.Context) -> None:
    """Only the named senders' heartbeats are delivered (for their tail drops); others never wake the process."""
    gaps: list = []
    sub = Subscriber(ctx, "inproc://hb-from", ["md.tick."], bind=True, heartbeats_from=["feed"],
                     on_gap=lambda *g: gaps.append(g))
    feed = Publisher(ctx, "inproc://hb-from", "feed")
    other = Publisher(ctx, "inproc://hb-from", "feed-2")  # a longer name sharing the prefix
    deadline = time.monotonic() + 5
    while sub.recv(10) is None:
        feed.publish("md.tick.warmup", tick(0))
        assert time.monotonic() < deadline
    sub.drain()
    feed.publish(TOPIC, tick(1))
    other.publish("sys.heartbeat.feed-2", heartbeat({}))
    other.publish("sys.heartbeat.agent", heartbeat({}))
    feed.publish("sys.heartbeat.feed", heartbeat({TOPIC: 3}))  # announces two ticks this subscriber never got
    frames = []
    while sub.socket.poll(200):
        frames.append(sub.socket.recv())
    topics = [f.split(b"\x00", 1)[0] for f in frames]
    assert topics == [TOPIC.encode(), b"sys.heartbeat.feed"]
    assert [sub.handle_frame(f) is not None for f in frames] == [True, False]
    assert gaps == [("feed", TOPIC, 2, 3)]


# --- real processes through the real proxy -------------------------------------


def start_bus(spawn: Spawn, settings: StackSettings, **env: str) -> None:
    proxy = spawn("bus.proxy", env=env)
    wait_for_socket(ipc_path(settings, "bus_out"), proxy)
    wait_for_socket(ipc_path(settings, "bus_in"), proxy)


def start_counter(spawn: Spawn, settings: StackSettings, **env: str) -> None:
    proc = spawn("tests.bus.counter_service", env=env)
    wait_for_socket(ipc_path(settings, "supervisor_rpc"), proc)


def wait_for_heartbeat(sub: Subscriber, sender: str, timeout_s: float = 10.0) -> Heartbeat:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        env = sub.recv(100)
        if env is not None and env.sender == sender and isinstance(env.msg, Heartbeat):
            return env.msg
    pytest.fail(f"no heartbeat from {sender} within {timeout_s} s")


def test_messages_cross_processes_through_the_proxy(spawn: Spawn, settings: StackSettings, ctx: zmq.Context) -> None:
    start_bus(spawn, settings)
    start_counter(spawn, settings, TRADER_BUS__HEARTBEAT_INTERVAL_S="0.1")
    sub = Subscriber(ctx, settings.endpoint("bus_out"), ["md.tick.", "sys.heartbeat."])
    wait_for_heartbeat(sub, "counter")  # the subscription has reached the publisher
    client = RpcClient(ctx, settings.endpoint("supervisor_rpc"))
    client.call(Command(command_id="p1", name="publish", args={"topic": TOPIC, "count": 1000}))
    seqs = []
    deadline = time.monotonic() + 10
    while len(seqs) < 1000 and time.monotonic() < deadline:
        env = sub.recv(100)
        if env is not None and env.topic == TOPIC:
            assert isinstance(env.msg, Tick) and env.sender == "counter"
            seqs.append(env.seq)
    assert seqs == list(range(1, 1001))
    assert sub.missed == 0 and not sub.rejected


def test_high_water_mark_drops_are_detected_including_the_tail(
    spawn: Spawn, settings: StackSettings, ctx: zmq.Context
) -> None:
    small_queues = {"TRADER_BUS__SNDHWM": "50", "TRADER_BUS__RCVHWM": "50"}
    start_bus(spawn, settings, **small_queues)
    start_counter(spawn, settings, TRADER_BUS__HEARTBEAT_INTERVAL_S="0.1", **small_queues)
    gaps: list[tuple[str, str, int, int]] = []
    sub = Subscriber(
        ctx, settings.endpoint("bus_out"), ["md.tick."], rcvhwm=50, on_gap=lambda *g: g[1] == TOPIC and gaps.append(g)
    )
    probe = Subscriber(ctx, settings.endpoint("bus_out"), ["sys.heartbeat."])
    wait_for_heartbeat(probe, "counter")
    sub.recv(200)  # connected and subscribed; nothing of ours sent yet
    total = 100_000
    client = RpcClient(ctx, settings.endpoint("supervisor_rpc"), timeout_ms=10_000, retries=0)
    client.call(Command(command_id="flood", name="publish", args={"topic": TOPIC, "count": total}))
    time.sleep(0.5)  # the subscriber lags: every queue on the way fills and overflows
    received: list[int] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        env = sub.recv(100)
        if env is not None:
            received.append(env.seq)
        if received and gaps and gaps[-1][3] == total:
            break  # a heartbeat announced the end of the stream
    missing = [seq for (_, _, first, last) in gaps for seq in range(first, last + 1)]
    assert received and received[0] == 1
    assert sub.missed > 0
    assert max(received) < total  # the end of the burst was dropped ...
    assert gaps[-1][3] == total  # ... and the heartbeat revealed it
    assert sorted(received + missing) == list(range(1, total + 1))
    assert sub.received == len(received)
