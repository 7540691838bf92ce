"""Garbage on every bus endpoint: the proxy's two ends, a subscriber process behind it, the broker feed.

Frames go out from raw PUB/XSUB sockets in tight loops, in chunks, each chunk
followed by a real message that must come through. The oracle for what a
subscriber must reject is the codec itself, applied here to every frame whose
bytes match the subscriber's prefixes (ZeroMQ's own filter): the process's
heartbeat must then count exactly those frames as rejected, by reason.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import zmq

from bus.codec import encode
from bus.pubsub import Publisher, Subscriber
from bus.rpc import RpcClient
from core.messages import Command, Heartbeat, SessionEvent, SessionPhase, Tick
from tests.fuzz.conftest import CORE_PROCESSES, Stack, stack_env, wait_for
from tests.fuzz.frames import FrameFactory, expected_reason

CHUNK = 2_000
RISK_GUARD_TOPICS = (b"oms.event.", b"md.tick.", b"md.session", b"sys.heartbeat.")
MARKET_DATA_FEED_TOPICS = (b"md.", b"sys.heartbeat.")
SENTINEL_TOPIC = "fuzz.sentinel"


def expected_rejects(frames: list[bytes], prefixes: tuple[bytes, ...]) -> Counter[str]:
    """What a subscriber to ``prefixes`` must reject of ``frames``, by reason."""
    out: Counter[str] = Counter()
    for frame in frames:
        if frame.startswith(prefixes):
            reason = expected_reason(frame, subscribed=True)
            if reason is not None:
                out[reason] += 1
    return out


def wait_for_sentinel(sub: Subscriber, seq: int, timeout_s: float = 60.0) -> None:
    """Read ``sub`` until the sentinel numbered ``seq`` arrives (everything sent before it came through)."""
    def arrived() -> bool:
        env = sub.recv(timeout_ms=100)
        while env is not None:
            if env.topic == SENTINEL_TOPIC and env.msg.qty == seq:  # type: ignore[attr-defined]
                return True
            env = sub.recv()
        return False
    wait_for(arrived, timeout_s, f"sentinel {seq} through the bus")


def sentinel(seq: int) -> Tick:
    return Tick(code="005930", ts_ns=time.time_ns(), price=70_000, qty=seq)


def wait_for_rejects(stack: Stack, name: str, expected: Counter[str], timeout_s: float = 60.0) -> dict[str, int]:
    """Wait until ``name``'s heartbeat counts exactly ``expected`` rejects (it may lag behind)."""
    seen: dict[str, int] = {}

    def counted() -> bool:
        nonlocal seen
        seen = stack.rejected_frames(name)
        return seen == dict(expected)
    try:
        wait_for(counted, timeout_s, f"{name} to count the rejected frames")
    except AssertionError:
        raise AssertionError(f"{name} counted {seen}, expected {dict(expected)}") from None
    return seen


def fuzz_bus_in(stack: Stack, frames_total: int, seed: int) -> None:
    topics = ["md.tick.005930", "md.session", "oms.event.fuzz", "fuzz.elsewhere"]
    factory = FrameFactory(seed, topics)
    garbage = stack.ctx.socket(zmq.PUB)
    garbage.setsockopt(zmq.SNDHWM, 0)
    garbage.setsockopt(zmq.LINGER, 0)
    garbage.connect(stack.endpoint("bus_in"))
    everything = Subscriber(stack.ctx, stack.endpoint("bus_out"), ["md.", "oms.", "fuzz."], rcvhwm=0)
    sentinels = Subscriber(stack.ctx, stack.endpoint("bus_out"), [SENTINEL_TOPIC], rcvhwm=0)
    try:
        # Subscriptions reach a new publisher a moment after it connects: probe until one gets through.
        probe = 0

        def probe_through() -> bool:
            nonlocal probe
            probe += 1
            garbage.send(encode(SENTINEL_TOPIC, "fuzz", probe, sentinel(0)))
            return sentinels.recv(timeout_ms=100) is not None
        wait_for(probe_through, 30, "the fuzz publisher's subscriptions")
        everything.drain()
        before_guard = Counter(stack.rejected_frames("risk-guard"))
        sent_rejects: Counter[str] = Counter()
        guard_rejects: Counter[str] = Counter()
        real_ticks = 0
        sent = 0
        while sent < frames_total:
            chunk = factory.frames(min(CHUNK, frames_total - sent))
            for frame in chunk:
                garbage.send(frame)
            sent += len(chunk)
            garbage.send(encode(SENTINEL_TOPIC, "fuzz", sent, sentinel(sent)))
            sent_rejects += expected_rejects(chunk, (b"md.", b"oms.", b"fuzz."))
            guard_rejects += expected_rejects(chunk, RISK_GUARD_TOPICS)
            wait_for_sentinel(sentinels, sent)
            real_ticks += sum(1 for env in everything.drain(limit=10 * CHUNK) if env.sender == "market-data")
        everything.drain(limit=10 * CHUNK)
        # The proxy passed every frame through unchanged and in order: the test's own subscriber
        # rejected exactly what the codec says it must.
        assert everything.rejected == sent_rejects
        assert real_ticks > 0, "real market data stopped flowing through the proxy"
        stack.assert_alive()
        wait_for_rejects(stack, "risk-guard", before_guard + guard_rejects)
        assert sum(guard_rejects.values()) > frames_total // 4
    finally:
        garbage.close(linger=0)
        everything.close()
        sentinels.close()


def subscription_garbage(rng: random.Random) -> list[bytes]:
    """What a peer of the proxy's XPUB end could send: (un)subscriptions, junk, multipart, empty frames."""
    shape = rng.randrange(10)
    if shape < 2:
        return [b"\x01" + rng.randbytes(rng.randrange(1, 6))]  # subscribe to a random short prefix
    if shape < 4:
        return [b"\x00" + rng.randbytes(rng.randrange(0, 20))]  # unsubscribe from what was never subscribed
    if shape == 4:
        return [b""]
    if shape == 5:
        return [rng.randbytes(rng.randrange(1, 30)) for _ in range(rng.randrange(2, 6))]
    junk = rng.randbytes(rng.randrange(1, 200))
    return [bytes([rng.randrange(2, 256)]) + junk[1:]]


def fuzz_bus_out(stack: Stack, frames_total: int, seed: int) -> None:
    rng = random.Random(seed)
    peer = stack.ctx.socket(zmq.XSUB)
    peer.setsockopt(zmq.LINGER, 0)
    peer.setsockopt(zmq.RCVHWM, 10)
    peer.connect(stack.endpoint("bus_out"))
    publisher = Publisher(stack.ctx, stack.endpoint("bus_in"), "fuzz")
    sentinels = Subscriber(stack.ctx, stack.endpoint("bus_out"), [SENTINEL_TOPIC], rcvhwm=0)
    try:
        wait_for(lambda: publisher.publish(SENTINEL_TOPIC, sentinel(0)) and sentinels.recv(timeout_ms=100),
                 30, "the sentinel subscription")
        sentinels.drain()
        missed_before = sentinels.missed
        sent, resent = 0, 0
        while sent < frames_total:
            for _ in range(min(CHUNK, frames_total - sent)):
                peer.send_multipart(subscription_garbage(rng))
                sent += 1
            publisher.publish(SENTINEL_TOPIC, sentinel(sent))
            try:
                wait_for_sentinel(sentinels, sent, timeout_s=20.0)
            except AssertionError:
                # PUB/SUB may drop under pressure; what the bus promises is that forwarding goes on
                # and that every drop is seen as a gap. Send the marker again and check both below.
                resent += 1
                publisher.publish(SENTINEL_TOPIC, sentinel(sent))
                wait_for_sentinel(sentinels, sent)
        if resent:
            assert sentinels.missed - missed_before >= resent, "a dropped marker was not detected as a gap"
        stack.assert_alive()
        started = time.time_ns()
        for name in CORE_PROCESSES.values():
            stack.fresh_heartbeat(name, started)
    finally:
        peer.close(linger=0)
        publisher.close()
        sentinels.close()


@pytest.fixture(scope="module")
def feed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The bus and market data, with the broker feed endpoint bound by the test instead of the exchange."""
    run_dir = tmp_path_factory.mktemp("fd")
    feed = f"ipc://{run_dir}/feed.sock"
    s = Stack(run_dir, stack_env(run_dir, TRADER_ENDPOINTS__EXCHANGE_FEED=feed))
    s.feed = s.ctx.socket(zmq.PUB)  # type: ignore[attr-defined]
    s.feed.setsockopt(zmq.SNDHWM, 0)  # type: ignore[attr-defined]
    s.feed.setsockopt(zmq.LINGER, 0)  # type: ignore[attr-defined]
    s.feed.bind(feed)  # type: ignore[attr-defined]
    try:
        s.start("bus.proxy")
        s.start("services.market_data")
        s.wait_running(["bus", "market-data"])
        yield s
    finally:
        s.feed.close(linger=0)  # type: ignore[attr-defined]
        s.stop()


def fuzz_feed(stack: Stack, frames_total: int, seed: int) -> None:
    """The broker feed as market data consumes it: garbage between real ticks and feed heartbeats."""
    feed: zmq.Socket = stack.feed  # type: ignore[attr-defined]
    factory = FrameFactory(seed, ["md.tick.005930", "md.bar.1m.005930", "md.session", "sys.heartbeat.venue", "exec.x"])
    forwarded = Subscriber(stack.ctx, stack.endpoint("bus_out"), ["md.tick.000660"], rcvhwm=0)
    status = RpcClient(stack.ctx, stack.endpoint("market_data_rpc"), timeout_ms=10_000, retries=0)
    seqs = Counter[str]()

    def real(topic: str, msg: object) -> None:
        seqs[topic] += 1
        feed.send(encode(topic, "exchange", seqs[topic], msg, ts_ns=time.time_ns()))  # type: ignore[arg-type]

    def beat() -> None:
        real("sys.heartbeat.venue", Heartbeat(name="exchange", pid=1, ts_ns=time.time_ns()))

    def tick(n: int) -> None:
        # Garbage may have carried a well-formed session event that closed the market: reopen it first.
        real("md.session", SessionEvent(phase=SessionPhase.OPEN, trading_date="20260303", ts_ns=time.time_ns()))
        real("md.tick.000660", Tick(code="000660", ts_ns=time.time_ns(), price=200_000, qty=n))

    def garbage_by_reason() -> Counter[str]:
        reply = status.call(Command(command_id="fuzz-status", name="status"))
        return Counter(reply.result["garbage_by_reason"])  # type: ignore[attr-defined]

    try:
        n = 0

        def first_tick_forwarded() -> bool:
            nonlocal n
            n += 1
            beat()
            tick(n)
            return forwarded.recv(timeout_ms=200) is not None
        wait_for(first_tick_forwarded, 30, "market data to forward a tick from the feed")
        before = garbage_by_reason()
        expected: Counter[str] = Counter()
        sent = 0
        while sent < frames_total:
            chunk = factory.frames(min(CHUNK, frames_total - sent))
            beat()
            for frame in chunk:
                feed.send(frame)
            sent += len(chunk)
            expected += expected_rejects(chunk, MARKET_DATA_FEED_TOPICS)
            n += 1
            tick(n)
            mark = n

            def real_tick_forwarded() -> bool:
                stack.assert_alive()
                beat()  # a feed that reconnected meanwhile has missed the first copy: send it again
                tick(mark)
                env = forwarded.recv(timeout_ms=100)
                while env is not None:
                    if env.msg.qty == mark:  # type: ignore[attr-defined]
                        return True
                    env = forwarded.recv()
                return False
            wait_for(real_tick_forwarded, 60, f"real tick {mark} forwarded to the bus")
        stack.assert_alive()
        # Market data keeps its own count of feed garbage across reconnections (a well-formed
        # heartbeat in the garbage may make it reconnect): its status RPC reports it by reason.
        seen: Counter[str] = Counter()

        def counted() -> bool:
            nonlocal seen
            seen = garbage_by_reason()
            return seen == before + expected
        try:
            wait_for(counted, 60, "market data to count the garbage")
        except AssertionError:
            raise AssertionError(f"market data counted {dict(seen)}, expected {dict(before + expected)}") from None
    finally:
        forwarded.close()
        status.close()


def test_garbage_into_bus_in_reaches_subscribers_intact_and_is_rejected_there(stack: Stack) -> None:
    fuzz_bus_in(stack, 6_000, seed=11)


def test_garbage_at_bus_out_leaves_the_proxy_forwarding(stack: Stack) -> None:
    fuzz_bus_out(stack, 6_000, seed=12)


def test_garbage_on_the_broker_feed_is_rejected_by_market_data_and_real_ticks_forwarded(feed_stack: Stack) -> None:
    fuzz_feed(feed_stack, 6_000, seed=13)


@pytest.mark.slow
def test_a_hundred_thousand_frames_on_each_bus_endpoint(stack: Stack, feed_stack: Stack) -> None:
    fuzz_bus_in(stack, 100_000, seed=21)
    fuzz_bus_out(stack, 100_000, seed=22)
    fuzz_feed(feed_stack, 100_000, seed=23)
