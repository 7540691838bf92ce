"""How the firm scales with its agents: the whole stack with N agents, measured (``python -m bench.scale``).

For each N (8, 32, 100 by default; ``--agents 8,100``) a live stack of
:mod:`bench.livestack` (every Procfile process, a generated roster across the
instrument master, the paper exchange at x60) starts in a temporary run
directory at 07:50 market time, and the run measures:

* ``start_s``: from starting the processes (``trader up``'s work) to every agent in sync;
* ``idle_cpu_pct``: the CPU of every process of the stack, in % of one core, over
  ``IDLE_S`` wall seconds while the market is closed (``SETTLE_S`` after the last
  agent's sync: the services' start-up work is not idling);
* ``trading_cpu_pct``: the same over ``TRADING_S`` seconds of continuous trading;
* ``uss_total_mb`` and ``agent_uss_mb``: the sum of every process's USS (its own
  memory, what ending it gives back) and the agents' mean, while trading;
* ``tick_p50_ms`` / ``tick_p99_ms``: the venue's publish of a tick to the agent's
  ``on_tick``, and ``ack_p50_us``: an order or cancel to its answer from the order
  manager, both from the agents' own histograms (``bus.latency``, in their heartbeats);
* ``push_p95_ms``: the dashboard's push (a tick published to its price shown on the
  Market page in a headless Chromium) with the N agents running.

It prints one JSON line per N, the largest last:
``{"bench": "scale", "agents": 100, "start_s": ..., ...}``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import zmq

from bench.livestack import LiveStack, progress
from bus import latency
from bus.pidlock import cmdline_of
from bus.pubsub import HEARTBEAT_TOPIC_PREFIX, Subscriber
from core.messages import Heartbeat, SessionEvent

START_TIME = "07:45"  # market time at start: 45 wall seconds of a closed market at x60 before the opening auction
IDLE_S = 10.0
SETTLE_S = 10.0  # after every agent is in sync: the services' start-up work (first reconciliation, ledger) ends
TRADING_S = 20.0
OPEN_SETTLE_S = 5.0  # after the open, before the trading window (the first orders go out)
PUSH_EVENTS = 40
PROBE_CODE = "999990"  # not in the instrument master: only the board sees the probe ticks
GOALS = {"start_s": 20.0, "idle_cpu_pct": 15.0, "uss_total_mb": 1500.0, "agent_uss_mb": 10.0, "tick_p99_ms": 50.0,
         "ack_p50_us": 2000.0, "push_p95_ms": 300.0}


class Watch:
    """Heartbeats and session events of the stack's bus, read as they come."""

    def __init__(self, ctx: zmq.Context, endpoint: str) -> None:
        self.sub = Subscriber(ctx, endpoint, [HEARTBEAT_TOPIC_PREFIX, "md.session"])
        self.last: dict[str, Heartbeat] = {}
        self.phase = ""

    def pump(self, seconds: float = 0.2) -> None:
        end = time.monotonic() + seconds
        while True:
            for env in self.sub.drain():
                if isinstance(env.msg, Heartbeat):
                    self.last[env.msg.name] = env.msg
                elif isinstance(env.msg, SessionEvent):
                    self.phase = str(env.msg.phase)
            if time.monotonic() >= end:
                return
            time.sleep(0.02)

    def in_sync(self, ids: list[str]) -> int:
        return sum(1 for a in ids if a in self.last and self.last[a].info.get("sync") == "in_sync")

    def close(self) -> None:
        self.sub.close()


def stack_processes(stack: LiveStack) -> list[psutil.Process]:
    """Every live process of the stack (the agents and the agents' parent included)."""
    return stack.firm.leftovers()


def cpu_seconds(procs: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:
            continue
    return out


def role(p: psutil.Process) -> str:
    """What a process of the stack is: its module (``services.exchange``), ``agent`` or ``agent parent``."""
    try:
        cmd = cmdline_of(p)
    except psutil.Error:
        return "?"
    module = cmd[cmd.index("-m") + 1] if "-m" in cmd[:-1] else " ".join(cmd[:2])
    return {"agents.runtime": "agent", "agents.zygote": "agent parent"}.get(module, module)


def cpu_pct(stack: LiveStack, watch: Watch, seconds: float) -> tuple[float, dict[str, float]]:
    """The stack's CPU over ``seconds`` (the processes alive at the start), in % of one core; and by role."""
    procs = stack_processes(stack)
    before = cpu_seconds(procs)
    t0 = time.monotonic()
    watch.pump(seconds)
    after = cpu_seconds(procs)
    wall = time.monotonic() - t0
    by_role: dict[str, float] = {}
    for p in procs:
        if p.pid in before and p.pid in after:
            r = role(p)
            by_role[r] = by_role.get(r, 0.0) + 100.0 * (after[p.pid] - before[p.pid]) / wall
    return sum(by_role.values()), dict(sorted(by_role.items(), key=lambda kv: -kv[1]))


def _roles(by_role: dict[str, float]) -> str:
    return ", ".join(f"{r} {v:.1f}" for r, v in by_role.items() if v >= 0.5)


def uss(stack: LiveStack, agents: set[int]) -> tuple[float, float, int]:
    """(the sum of every process's USS, the agents' mean USS, how many agents) in MB."""
    total = 0
    mine: list[int] = []
    for p in stack_processes(stack):
        try:
            u = p.memory_full_info().uss
        except psutil.Error:
            continue
        total += u
        if p.pid in agents:
            mine.append(u)
    return total / 1e6, (sum(mine) / len(mine) / 1e6) if mine else 0.0, len(mine)


def wait_phase(watch: Watch, phase: str, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        watch.pump(0.2)
        if watch.phase == phase:
            return True
    return False


def push_p95(stack: LiveStack) -> float | None:
    """The dashboard's push p95 (ms) on the Market page, or None without a browser."""
    try:
        from playwright.sync_api import sync_playwright

        from bench.dashboard import launch, measure_push, percentile
    except ImportError:
        return None
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page()
            page.goto(stack.url + "/market")
            page.wait_for_selector("#conn:text('live')", timeout=30_000)
            lat = measure_push(page, stack.publisher(), PROBE_CODE, PUSH_EVENTS, 100_000)
        finally:
            browser.close()
    return percentile(lat, 95)


def ms(v: float | None) -> float | None:
    return None if v is None else round(v / 1000, 2)


def run(n: int) -> dict[str, Any]:
    progress(f"scale: {n} agents")
    with tempfile.TemporaryDirectory(prefix="scalebench") as tmp:
        stack = LiveStack(Path(tmp), n, start_time=START_TIME)
        watch: Watch | None = None
        try:
            stack.check_config()
            watch = Watch(stack.ctx, stack.endpoint("bus_out"))
            t0 = time.monotonic()
            stack.firm.start_all()
            while watch.in_sync(stack.agent_ids) < n:
                watch.pump(0.2)
                if time.monotonic() - t0 > 300:
                    raise TimeoutError(f"only {watch.in_sync(stack.agent_ids)} of {n} agents in sync after 300 s")
            start_s = time.monotonic() - t0
            progress(f"scale: {n} agents in sync after {start_s:.1f} s (phase {watch.phase or '?'})")
            watch.pump(SETTLE_S)
            idle_phase = watch.phase
            idle, idle_roles = cpu_pct(stack, watch, IDLE_S)
            if watch.phase != idle_phase:
                progress(f"scale: the phase changed during the idle window ({idle_phase} -> {watch.phase})")
            progress(f"scale: idle CPU {idle:.1f} % of one core ({_roles(idle_roles)}); waiting for the open")
            if not wait_phase(watch, "open", 120):
                raise TimeoutError("the market did not open within 120 s")
            watch.pump(OPEN_SETTLE_S)
            trading, trading_roles = cpu_pct(stack, watch, TRADING_S)
            agent_pids = {hb.pid for a, hb in watch.last.items() if a in set(stack.agent_ids)}
            total_mb, agent_mb, counted = uss(stack, agent_pids)
            progress(f"scale: trading CPU {trading:.1f} % ({_roles(trading_roles)}); USS {total_mb:.0f} MB in all, {agent_mb:.1f} MB per agent "
                     f"({counted} agents)")
            hist = [stack_hb.info.get("latency", {}) for a, stack_hb in watch.last.items() if a in stack.agent_ids]
            ticks = latency.merge(h.get("tick_us", {}) for h in hist)
            acks = latency.merge(h.get("ack_us", {}) for h in hist)
            oms = watch.last.get("order-manager")
            stages = (oms.info.get("latency") or {}) if oms is not None else {}
            progress("scale: an order at the order manager, p50 ms: " + ", ".join(
                f"{k.removesuffix('_us')} {ms(latency.percentile(latency.merge([v]), 50))}"
                for k, v in stages.items() if v))
            push = push_p95(stack)
            trades = stack.trading()
        finally:
            if watch is not None:
                watch.close()
            stack.stop()

    ack50 = latency.percentile(acks, 50)
    out = {"bench": "scale", "agents": n, "start_s": round(start_s, 1), "idle_cpu_pct": round(idle, 1),
           "trading_cpu_pct": round(trading, 1), "uss_total_mb": round(total_mb), "agent_uss_mb": round(agent_mb, 1),
           "tick_p50_ms": ms(latency.percentile(ticks, 50)), "tick_p99_ms": ms(latency.percentile(ticks, 99)),
           "ticks": sum(ticks.values()), "ack_p50_us": None if ack50 is None else round(ack50),
           "acks": sum(acks.values()), "push_p95_ms": None if push is None else round(push, 1)}
    missed = [k for k, goal in GOALS.items() if out.get(k) is not None and out[k] > goal]
    progress(f"scale: {n} agents: {trades}; " + (f"goals missed: {', '.join(missed)}" if missed else "every goal met"))
    return out


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", default="8,32,100", help="comma-separated agent counts (default 8,32,100)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    counts = [int(x) for x in args.agents.split(",") if x.strip()]
    for n in counts:
        print(json.dumps(run(n)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
