"""Operations figures of the whole stack (``python -m bench.ops``).

Starts every Procfile line in a temporary run directory with the default
roster, on a real-time clock parked before the opening auction (so "idle"
means the stack with nothing trading), and measures:

* start_s: cold start until every service heartbeats and every agent is in sync;
* agent_recover_s: kill -9 of an agent until the supervisor's restart of it is in sync;
* idle_cpu_pct: CPU of every process of the stack together over 20 s, in % of one core;
* agent_rss_mb: mean resident memory per agent.

Goals: start <= 5 s, recover <= 2 s, idle <= 5 % of one core, <= 80 MB per agent.
The last line is JSON.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import zmq

from bus.rpc import RpcClient, RpcFailure
from core.config import PROJECT_ROOT
from core.messages import Command
from services.cli.stack import stack_entries

IDLE_S = 20.0


def _list(client: RpcClient) -> list[dict[str, Any]]:
    try:
        reply = client.call(Command(command_id=uuid.uuid4().hex, name="list"))
    except RpcFailure:
        client.close()
        return []
    return list(reply.result or []) if getattr(reply, "ok", False) else []


def _healthy(rows: list[dict[str, Any]], services: set[str]) -> bool:
    up = {r["name"] for r in rows if r["kind"] == "service" and r["state"] == "running" and r.get("heartbeat_age_s") is not None}
    agents = [r for r in rows if r["kind"] == "agent" and r["state"] != "disabled"]
    return services <= up and bool(agents) and all(r.get("sync") == "in_sync" for r in agents)


def main() -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="trader-bench-ops-"))
    env = {**os.environ, "TRADER_RUN_DIR": str(run_dir), "TRADER_CLOCK__SPEED": "1", "TRADER_CLOCK__START_TIME": "08:00",
           "PYTHONUNBUFFERED": "1", "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    os.environ["TRADER_RUN_DIR"] = str(run_dir)
    (run_dir / "logs").mkdir(parents=True)
    lines = stack_entries()
    services = {name for name, _ in lines}
    procs: list[subprocess.Popen[bytes]] = []
    ctx = zmq.Context()
    client = RpcClient(ctx, f"ipc://{run_dir}/run/supervisor-rpc.sock", timeout_ms=3000, retries=0)
    agent_pids: set[int] = set()
    try:
        t0 = time.monotonic()
        for name, cmd in lines:
            argv = cmd.split()
            argv[0] = sys.executable if argv[0] == "python" else argv[0]
            with open(run_dir / "logs" / f"{name}.log", "ab") as log:
                procs.append(subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True))
        rows: list[dict[str, Any]] = []
        while time.monotonic() - t0 < 120:
            rows = _list(client)
            if _healthy(rows, services):
                break
            time.sleep(0.05)
        start_s = time.monotonic() - t0
        agents = [r for r in rows if r["kind"] == "agent" and r.get("pid")]
        agent_pids.update(r["pid"] for r in agents)
        print(f"cold start to healthy: {start_s:.2f} s ({len(agents)} agents)")

        victim = agents[0]
        t1 = time.monotonic()
        os.kill(victim["pid"], signal.SIGKILL)
        recover_s = float("nan")
        while time.monotonic() - t1 < 60:
            r = next((x for x in _list(client) if x["name"] == victim["name"]), None)
            if r and r.get("pid") and r["pid"] != victim["pid"] and r.get("sync") == "in_sync":
                recover_s = time.monotonic() - t1
                agent_pids.add(r["pid"])
                break
            time.sleep(0.02)
        print(f"kill -9 of {victim['name']} to back in sync: {recover_s:.2f} s")

        time.sleep(2.0)
        rows = _list(client)
        names = {r["pid"]: r["name"] for r in rows if r.get("pid")}
        ps = []
        for pid in names:
            try:
                p = psutil.Process(pid)
                p.cpu_percent(None)
                ps.append(p)
            except psutil.NoSuchProcess:
                pass
        time.sleep(IDLE_S)
        idle = 0.0
        for p in ps:
            try:
                pct = p.cpu_percent(None)
            except psutil.NoSuchProcess:
                continue
            idle += pct
            print(f"  idle cpu {names[p.pid]:<20} {pct:5.1f} %")
        rss = [r["rss_bytes"] for r in rows if r["kind"] == "agent" and r.get("rss_bytes")]
        agent_rss_mb = sum(rss) / len(rss) / 1e6 if rss else float("nan")
        print(f"idle CPU of {len(ps)} processes over {IDLE_S:.0f} s: {idle:.1f} % of one core")
        print(f"rss per agent: {agent_rss_mb:.1f} MB")
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for pid in agent_pids:
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
        client.close()
        ctx.destroy(linger=0)
    print(json.dumps({"bench": "ops", "start_s": round(start_s, 2), "agent_recover_s": round(recover_s, 2),
                      "idle_cpu_pct": round(idle, 1), "agent_rss_mb": round(agent_rss_mb, 1)}))


if __name__ == "__main__":
    main()
