"""Ticks per second one agent process takes through its strategy, and its resident memory.

``python -m bench.agent [--seconds S] [--strategy sma_cross]``: starts the bus
proxy, the order manager (for the agent's start-up sync) and one agent in a
temporary run directory, publishes ticks of the agent's code on the bus as fast
as this process can, and reads what the agent processed from its own status
page (``counters.ticks``, refreshed every 0.25 s). Each tick goes the whole
way: bus frame, decode and validation, ``AgentContext.on_tick`` (the book's
mark) and the strategy's ``on_tick``. The rate is taken over the window in
which the agent's count rose; the resident set size after the run.

The last line is JSON: {"bench": "agent", "ticks_per_s": ..., "rss_mb": ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import zmq

from bus.pubsub import Publisher
from core.config import PROJECT_ROOT, load_stack
from core.messages import SessionEvent, SessionPhase, Tick

T0 = 1_772_500_000_000_000_000  # 2026-03-03 10:06:40 KST


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=1.0) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def _wait(cond: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def run(seconds: float, strategy: str, params: dict[str, Any]) -> dict[str, Any]:
    """Measure one agent process; every process started here is stopped before returning."""
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        run_dir = Path(tmp)
        port = _free_port()
        roster = run_dir / "agents.toml"
        lines = ["[[agents]]", 'id = "bench"', 'code = "005930"', f"dp = {port}", f'strategy = "{strategy}"', "cash = 100000000",
                 "[agents.params]"] + [f"{k} = {json.dumps(v)}" for k, v in params.items()]
        roster.write_text("\n".join(lines) + "\n")
        env = {**os.environ, "TRADER_RUN_DIR": str(run_dir), "TRADER_ROSTER_FILE": str(roster)}
        os.environ.update({"TRADER_RUN_DIR": str(run_dir)})
        settings = load_stack()
        procs: list[subprocess.Popen[bytes]] = []
        ctx = zmq.Context()
        try:
            for module in (["bus.proxy"], ["services.order_manager"], ["agents.runtime", "--id", "bench"]):
                log = open(run_dir / f"{module[0]}.log", "ab")
                procs.append(subprocess.Popen([sys.executable, "-m", *module], cwd=PROJECT_ROOT, env=env, stdout=log, stderr=log))
            agent = procs[-1]
            _wait(lambda: (s := _status(port)) and s["sync"]["state"] == "in_sync", 60, "the agent in sync")
            rss_idle_mb = psutil.Process(agent.pid).memory_info().rss / 1e6
            pub = Publisher(ctx, settings.endpoint("bus_in"), "bench-feed", sndhwm=1_000_000)
            time.sleep(0.5)  # the agent's subscription reaches the proxy
            pub.publish("md.session", SessionEvent(phase=SessionPhase.OPEN, trading_date="20260303", ts_ns=T0))
            ticks = [Tick(code="005930", ts_ns=T0 + i, price=70_000 + 100 * (i % 50), qty=1 + i % 7) for i in range(1000)]
            samples: list[tuple[float, int]] = []
            sent = 0
            end = time.monotonic() + seconds
            next_sample = 0.0
            while time.monotonic() < end:
                for t in ticks:
                    pub.publish("md.tick.005930", t)
                sent += len(ticks)
                now = time.monotonic()
                if now >= next_sample:
                    next_sample = now + 0.25
                    s = _status(port)
                    if s is not None:
                        samples.append((now, s["counters"]["ticks"]))
            # let the agent finish what is queued
            last = -1
            while True:
                time.sleep(0.5)
                s = _status(port)
                count = s["counters"]["ticks"] if s else last
                samples.append((time.monotonic(), count))
                if count == last:
                    break
                last = count
            rising = [(t, n) for t, n in samples if n > 0]
            first = rising[0]
            top = next((t, n) for t, n in rising if n == last)
            rate = (top[1] - first[1]) / (top[0] - first[0]) if top[0] > first[0] else 0.0
            rss_mb = psutil.Process(agent.pid).memory_info().rss / 1e6
            status = _status(port) or {}
            return {"sent": sent, "processed": last, "ticks_per_s": round(rate), "rss_mb": round(rss_mb, 1), "rss_idle_mb": round(rss_idle_mb, 1),
                    "strategy_errors": status.get("errors_total"), "bus_gaps": status.get("counters", {}).get("bus_gaps")}
        finally:
            for proc in reversed(procs):
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            ctx.destroy(linger=0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.agent", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to publish ticks")
    parser.add_argument("--strategy", default="sma_cross", help="the strategy under load (default: the simplest)")
    args = parser.parse_args()
    params: dict[str, Any] = {"fast": 10, "slow": 30, "qty": 1} if args.strategy == "sma_cross" else {}
    result = run(args.seconds, args.strategy, params)
    print(f"published {result['sent']:,} ticks, the agent processed {result['processed']:,} "
          f"({result['bus_gaps']} gap(s) counted, {result['strategy_errors']} strategy errors)")
    print(f"ticks through the strategy: {result['ticks_per_s']:,}/s; agent rss {result['rss_idle_mb']} MB idle, "
          f"{result['rss_mb']} MB after the burst (its receive queue held up to the bus high-water mark)")
    print(json.dumps({"bench": "agent", "ticks_per_s": result["ticks_per_s"], "rss_mb": result["rss_mb"]}))


if __name__ == "__main__":
    main()
