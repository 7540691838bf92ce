"""Benchmark of the bus against raw pyzmq: throughput, RPC latency, a 4-process chain.

Run ``python -m bench.bus``. Every figure is measured in one run, so the ratios
compare like with like on a shared machine. Both throughput runs go through the
real proxy process (``python -m bus.proxy``) over ipc with identical frames:

1. raw: a PUB sends pre-encoded frames, a SUB ``recv()``s and counts them (the limit);
2. bus: ``Publisher.publish`` encodes every Tick, ``Subscriber`` decodes, validates
   and sequence-checks every frame; ``lost`` counts what vanished without being
   reported as a gap (a gap that is reported is counted as ``missed``);
   raw and bus bursts alternate, five of each, and their medians are compared;
3. RPC: ``RpcClient.call`` -> ``RpcServer`` in another process, round trip;
4. a chain feed -> agent -> order manager -> risk -> feed, four processes, each
   hop pub/sub through the proxy (Tick -> OrderRequest -> OrderRequest ->
   OrderEvent), one message in flight; then the same chain with raw pyzmq
   forwarding pre-encoded frames through the same proxy.

The last line printed is one JSON object.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

from bus.codec import encode
from bus.pubsub import Publisher, Subscriber
from bus.rpc import RpcClient, RpcServer
from core.config import PROJECT_ROOT, StackSettings, load_stack
from core.messages import Command, CommandResult, Heartbeat, OrderEvent, OrderRequest, OrderStatus, Side, Tick

FLOOD_TOPIC = "bench.tick.005930"
WARM_TOPIC = "bench.warm"
N_FLOOD = 100_000
FLOOD_ROUNDS = 5  # alternating raw and bus bursts; the medians are compared
N_RPC = 3_000
N_CHAIN = 1_500
CHAIN_TOPICS = ["bench.chain.feed", "bench.chain.agent", "bench.chain.oms", "bench.chain.risk"]
TICK = Tick(code="005930", ts_ns=1_700_000_000_000_000_000, price=70_000, qty=10, cum_volume=123_456, bid=69_900, ask=70_000)
WARM_TICK = TICK.model_copy(update={"qty": 0})


# --- processes ------------------------------------------------------------------


def flood(endpoint: str, mode: str, n: int, go: Any, stop: Any, results: Any) -> None:
    """Publisher process: warm up until the subscriber is ready, then send ``n`` ticks."""
    ctx = zmq.Context()
    if mode == "raw":
        sock = ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.LINGER, 2000)
        sock.connect(endpoint)
        frame = encode(FLOOD_TOPIC, "flood", 1, TICK)
        warm = encode(WARM_TOPIC, "flood", 1, TICK)
        while not go.wait(0.01):
            sock.send(warm)
        send = sock.send
        t0 = time.perf_counter()
        for _ in range(n):
            send(frame)
        elapsed = time.perf_counter() - t0
    else:
        pub = Publisher(ctx, endpoint, "flood", sndhwm=100_000, linger_ms=2000)
        sock = pub.socket
        # Warm up on the measured topic itself, so the subscriber knows where
        # the stream stands before the burst and can account for every number.
        while not go.wait(0.01):
            pub.publish(FLOOD_TOPIC, WARM_TICK)
        publish = pub.publish
        results.put(pub.last_seq + 1)  # where the burst begins on the topic
        t0 = time.perf_counter()
        for _ in range(n):
            publish(FLOOD_TOPIC, TICK)
        elapsed = time.perf_counter() - t0
        # Heartbeats tell the subscriber where each stream ended (tail drops).
        while not stop.wait(0.05):
            pub.publish("sys.heartbeat.flood", Heartbeat(name="flood", pid=os.getpid(), ts_ns=time.time_ns(), last_seq=pub.last_seq, info=pub.heartbeat_info()))
    results.put(n / elapsed)
    stop.wait(10)
    sock.close()
    ctx.term()


def rpc_server(endpoint: str, stop: Any) -> None:
    """RPC server process: answers every Command with a CommandResult."""
    ctx = zmq.Context()

    def answer(msg: Any, info: Any) -> CommandResult:
        return CommandResult(command_id=msg.command_id, ok=True, result=msg.args)

    server = RpcServer(ctx, endpoint, answer, name="bench-rpc")
    while not stop.is_set():
        if server.socket.poll(100):
            server.handle_ready()
    server.close()
    ctx.term()


def chain_stage(bus_in: str, bus_out: str, mode: str, stage: int, stop: Any) -> None:
    """One of agent (1), order manager (2), risk (3): turn the previous hop's message into the next."""
    in_topic, out_topic = CHAIN_TOPICS[stage - 1], CHAIN_TOPICS[stage]
    ctx = zmq.Context()
    if mode == "raw":
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, in_topic.encode() + b"\x00")
        sub.connect(bus_out)
        pub = ctx.socket(zmq.PUB)
        pub.connect(bus_in)
        out_prefix = out_topic.encode() + b"\x00"
        cut = len(in_topic) + 1
        while not stop.is_set():
            if sub.poll(100):
                frame = sub.recv()
                pub.send(out_prefix + frame[cut:])
        for s in (sub, pub):
            s.close(linger=0)
    else:
        bus_sub = Subscriber(ctx, bus_out, [in_topic])
        bus_pub = Publisher(ctx, bus_in, f"stage{stage}")
        while not stop.is_set():
            env = bus_sub.recv(100)
            if env is None:
                continue
            msg = env.msg
            if stage == 1:
                assert isinstance(msg, Tick)
                out: Any = OrderRequest(client_order_id=f"a-{msg.ts_ns}", agent_id="a", code=msg.code, side=Side.BUY, qty=1, price=msg.price, ts_ns=msg.ts_ns)
            elif stage == 2:
                assert isinstance(msg, OrderRequest)
                out = msg
            else:
                assert isinstance(msg, OrderRequest)
                out = OrderEvent(client_order_id=msg.client_order_id, agent_id=msg.agent_id, code=msg.code, side=msg.side, status=OrderStatus.ACCEPTED, qty=msg.qty, price=msg.price, ts_ns=msg.ts_ns)
            bus_pub.publish(out_topic, out)
        bus_sub.close()
        bus_pub.close()
    ctx.term()


# --- measurements -----------------------------------------------------------------


def measure_flood(settings: StackSettings, mode: str) -> dict[str, float]:
    """Throughput of one publisher process to this process's subscriber, through the proxy."""
    spawn = mp.get_context("spawn")
    go, stop, results = spawn.Event(), spawn.Event(), spawn.Queue()
    ctx = zmq.Context()
    proc = spawn.Process(target=flood, args=(settings.endpoint("bus_in"), mode, N_FLOOD, go, stop, results), daemon=True)
    received = missed = 0
    try:
        if mode == "raw":
            sock = ctx.socket(zmq.SUB)
            sock.setsockopt(zmq.RCVHWM, 100_000)
            sock.setsockopt(zmq.SUBSCRIBE, b"bench.")
            sock.connect(settings.endpoint("bus_out"))
        else:
            flood_gaps: list[tuple[int, int]] = []
            sub = Subscriber(
                ctx,
                settings.endpoint("bus_out"),
                ["bench."],
                rcvhwm=100_000,
                on_gap=lambda sender, topic, a, b: topic == FLOOD_TOPIC and flood_gaps.append((a, b)),
            )
            sock = sub.socket
        proc.start()
        prefix = FLOOD_TOPIC.encode() + b"\x00"
        # Until a warm-up frame of this publisher arrives (the bus proxy's own heartbeat does not count):
        # then its subscription has reached the publisher, and the burst loses nothing to a slow join.
        connect_by = time.monotonic() + 20
        while True:
            if not sock.poll(max(1, int((connect_by - time.monotonic()) * 1000))):
                raise RuntimeError("the publisher did not connect")
            if sock.recv().startswith(b"bench."):
                break
        go.set()
        first = last = 0.0
        if mode == "raw":
            recv = sock.recv
            while sock.poll(5000):
                frame = recv()
                if frame.startswith(prefix):
                    if received == 0:
                        first = time.perf_counter()
                    received += 1
                    last = time.perf_counter()
                    if received == N_FLOOD:
                        break
            lost = N_FLOOD - received
        else:
            drain = sub.drain
            first_seq = results.get(timeout=20)
            give_up = time.monotonic() + 30
            while time.monotonic() < give_up and sock.poll(5000):
                for env in drain(1000):
                    if env.topic == FLOOD_TOPIC:
                        if env.msg.qty == 0:  # still warming up
                            continue
                        if received == 0:
                            first = time.perf_counter()
                        received += 1
                        last = time.perf_counter()
                # A gap counts once the burst has begun; heartbeats reveal drops at its end.
                missed = sum(b - max(a, first_seq) + 1 for a, b in flood_gaps if b >= first_seq) if received else 0
                if received and received + missed >= N_FLOOD:
                    break
            lost = N_FLOOD - received - missed
        stop.set()
        pub_rate = results.get(timeout=10)
        rate = (received - 1) / (last - first) if received > 1 and last > first else 0.0
        return {"msgs_per_s": rate, "received": received, "missed": missed, "lost": lost, "pub_msgs_per_s": pub_rate}
    finally:
        stop.set()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        ctx.destroy(linger=0)


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-quantile (0..1) of already sorted values."""
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def measure_rpc(run_dir: Path) -> dict[str, float]:
    """Round-trip latency of RpcClient.call to an RpcServer in another process."""
    spawn = mp.get_context("spawn")
    endpoint = f"ipc://{run_dir}/bench-rpc.sock"
    stop = spawn.Event()
    proc = spawn.Process(target=rpc_server, args=(endpoint, stop), daemon=True)
    proc.start()
    ctx = zmq.Context()
    try:
        deadline = time.monotonic() + 10
        while not Path(endpoint.removeprefix("ipc://")).exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the RPC server did not start")
            time.sleep(0.01)
        client = RpcClient(ctx, endpoint, timeout_ms=2000, retries=0)
        cmd = Command(command_id="bench", name="echo", args={"n": 1})
        for _ in range(200):
            client.call(cmd)
        samples = []
        for _ in range(N_RPC):
            t0 = time.perf_counter_ns()
            client.call(cmd)
            samples.append((time.perf_counter_ns() - t0) / 1000)
        samples.sort()
        client.close()
        return {"p50_us": percentile(samples, 0.5), "p99_us": percentile(samples, 0.99)}
    finally:
        stop.set()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        ctx.destroy(linger=0)


def measure_chain(settings: StackSettings, mode: str) -> dict[str, float]:
    """Round trip feed -> agent -> order manager -> risk -> feed, one message in flight."""
    spawn = mp.get_context("spawn")
    stop = spawn.Event()
    bus_in, bus_out = settings.endpoint("bus_in"), settings.endpoint("bus_out")
    stages = [spawn.Process(target=chain_stage, args=(bus_in, bus_out, mode, i, stop), daemon=True) for i in (1, 2, 3)]
    for p in stages:
        p.start()
    ctx = zmq.Context()
    try:
        if mode == "raw":
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.SUBSCRIBE, CHAIN_TOPICS[3].encode() + b"\x00")
            sub.connect(bus_out)
            pub = ctx.socket(zmq.PUB)
            pub.connect(bus_in)
            frames = [encode(CHAIN_TOPICS[0], "feed", i, TICK.model_copy(update={"ts_ns": i})) for i in range(N_CHAIN + 1000)]

            def round_trip(i: int, timeout_ms: int) -> bool:
                pub.send(frames[i])
                while sub.poll(timeout_ms):
                    sub.recv()
                    return True
                return False
        else:
            bus_sub = Subscriber(ctx, bus_out, [CHAIN_TOPICS[3]])
            bus_pub = Publisher(ctx, bus_in, "feed")

            def round_trip(i: int, timeout_ms: int) -> bool:
                bus_pub.publish(CHAIN_TOPICS[0], TICK.model_copy(update={"ts_ns": i}))
                deadline = time.monotonic() + timeout_ms / 1000
                while (remaining := int((deadline - time.monotonic()) * 1000)) > 0:
                    env = bus_sub.recv(remaining)
                    if env is not None and env.msg.ts_ns == i:
                        return True
                return False

        # Warm up until every stage is connected and subscribed.
        deadline = time.monotonic() + 20
        i = 0
        while not round_trip(i, 100):
            i += 1
            if time.monotonic() > deadline:
                raise RuntimeError("the chain did not connect")
        time.sleep(0.2)
        if mode == "raw":
            while sub.poll(0):
                sub.recv()
        else:
            bus_sub.drain()
        samples = []
        for n in range(N_CHAIN):
            i += 1
            t0 = time.perf_counter_ns()
            if not round_trip(i % (N_CHAIN + 1000) if mode == "raw" else i, 2000):
                raise RuntimeError("a chain message was lost")
            samples.append((time.perf_counter_ns() - t0) / 1000)
        samples.sort()
        return {"p50_us": percentile(samples, 0.5), "p99_us": percentile(samples, 0.99)}
    finally:
        stop.set()
        for p in stages:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
        ctx.destroy(linger=0)


def start_proxy(run_dir: Path) -> subprocess.Popen:
    """The real bus process, as the stack runs it."""
    env = {**os.environ, "TRADER_RUN_DIR": str(run_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "bus.proxy"], cwd=PROJECT_ROOT, env=env, stderr=subprocess.DEVNULL)
    sock = run_dir / "run" / "bus-out.sock"
    deadline = time.monotonic() + 10
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the bus proxy did not start")
        time.sleep(0.02)
    return proc


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the finally blocks that stop the children


def main() -> None:
    """Run every measurement once and print figures, then the JSON line."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with tempfile.TemporaryDirectory(prefix="bb", dir="/tmp") as tmp:
        run_dir = Path(tmp)
        settings = load_stack(run_dir=str(run_dir))
        proxy = start_proxy(run_dir)
        try:
            # Raw and bus floods alternate, FLOOD_ROUNDS of each: a burst lasts well under a second, and
            # this machine's speed drifts over seconds, so one burst of each would compare two moments.
            raws, buses = [], []
            for _ in range(FLOOD_ROUNDS):
                raws.append(measure_flood(settings, "raw"))
                buses.append(measure_flood(settings, "bus"))
            raw = {"msgs_per_s": statistics.median(r["msgs_per_s"] for r in raws),
                   "pub_msgs_per_s": statistics.median(r["pub_msgs_per_s"] for r in raws),
                   "lost": sum(r["lost"] for r in raws)}
            bus = {"msgs_per_s": statistics.median(b["msgs_per_s"] for b in buses),
                   "pub_msgs_per_s": statistics.median(b["pub_msgs_per_s"] for b in buses),
                   "missed": sum(b["missed"] for b in buses), "lost": sum(b["lost"] for b in buses)}
            rounds = ", ".join(f"{b['msgs_per_s'] / r['msgs_per_s']:.2f}" for r, b in zip(raws, buses) if r["msgs_per_s"])
            print(f"raw pyzmq PUB -> proxy -> SUB   {raw['msgs_per_s']:>10,.0f} msg/s  (median of {FLOOD_ROUNDS}; publisher {raw['pub_msgs_per_s']:,.0f} msg/s, lost {raw['lost']})")
            print(f"bus Publisher -> proxy -> Subscriber {bus['msgs_per_s']:>7,.0f} msg/s  (median of {FLOOD_ROUNDS}; publisher {bus['pub_msgs_per_s']:,.0f} msg/s, missed+reported {bus['missed']}, lost {bus['lost']})")
            ratio = bus["msgs_per_s"] / raw["msgs_per_s"] if raw["msgs_per_s"] else 0.0
            print(f"ratio bus/raw                   {ratio:>10.2f}  (round by round: {rounds})")
            rpc = measure_rpc(run_dir)
            print(f"RPC round trip                  p50 {rpc['p50_us']:.0f} us  p99 {rpc['p99_us']:.0f} us")
            chain = measure_chain(settings, "bus")
            print(f"chain of 4 processes, bus pub/sub via proxy   p50 {chain['p50_us']:.0f} us  p99 {chain['p99_us']:.0f} us")
            raw_chain = measure_chain(settings, "raw")
            print(f"chain of 4 processes, raw pyzmq via proxy     p50 {raw_chain['p50_us']:.0f} us  p99 {raw_chain['p99_us']:.0f} us")
        finally:
            proxy.terminate()
            try:
                proxy.wait(5)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait(5)
    print(
        json.dumps(
            {
                "bench": "bus",
                "raw_msgs_per_s": round(raw["msgs_per_s"]),
                "bus_msgs_per_s": round(bus["msgs_per_s"]),
                "ratio": round(ratio, 3),
                "lost": bus["lost"],
                "rpc_p50_us": round(rpc["p50_us"], 1),
                "rpc_p99_us": round(rpc["p99_us"], 1),
                "chain_p50_us": round(chain["p50_us"], 1),
                "chain_p99_us": round(chain["p99_us"], 1),
                "raw_chain_p50_us": round(raw_chain["p50_us"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
