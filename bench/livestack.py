"""A live firm for the benchmarks: the whole stack with a generated roster of many real agents.

``LiveStack`` starts every Procfile process of the paper venue (bus, paper
exchange, market data, order manager, risk guard, reconciler, supervisor,
dashboard) through the chaos run's :class:`tests.chaos.firm.Firm`, in a
temporary run directory with a config directory of its own, free ports and a
roster written by :func:`live_roster`: ``n`` agents spread over the instrument
master and over cheap, real strategies (SMA crossover, churn, volume trigger)
with small allocations, so they trade a little. The supervisor starts the
agents; :meth:`LiveStack.wait_until_heartbeating` waits (progress on stderr)
until every agent of the roster heartbeats from its own process; ``stop``
takes everything down (``trader down``, then kill whatever is left) and is
safe to call twice.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import sys
import time
from pathlib import Path

import psutil
import zmq

from bus.pidlock import cmdline_of
from bus.pubsub import HEARTBEAT_TOPIC_PREFIX, Publisher, Subscriber
from core.config import PROJECT_ROOT, load_stack
from core.instruments import load_instruments
from core.messages import Heartbeat
from tests.chaos.firm import Firm

# The services that heartbeat on the bus (the proxy itself is the bus: its traffic is its sign of life).
HEARTBEATING_SERVICES = ("exchange", "market-data", "order-manager", "risk-guard", "reconciler", "supervisor", "dashboard")
STRATEGIES = ("sma_cross", "churn", "volume_trigger")
ALLOCATION_WON = 5_000_000  # per agent: 100 agents hold half of the paper account's 1,000,000,000 won
ORDER_WON = 1_000_000  # about this much per order (at least one share)
PROGRESS_EVERY_S = 5.0


def _params(strategy: str, price: int) -> str:
    qty = max(1, ORDER_WON // max(price, 1))
    if strategy == "sma_cross":
        return f"fast = 3\nslow = 8\nqty = {qty}\n"
    if strategy == "churn":
        return f"qty = {qty}\nticks_away = 2\nreplace_after_min = 10\nmax_position = {2 * qty}\n"
    return "lookback = 10\nsurge_ratio = 2.0\nmin_move = 0.002\ninvest_fraction = 0.2\n"


def live_roster(n: int, instruments_file: Path = PROJECT_ROOT / "configs" / "instruments.csv") -> str:
    """A roster of ``n`` agents: code ``i`` of the master and strategy ``i`` of STRATEGIES in turn.

    Every ``dp`` is a placeholder: :class:`tests.chaos.firm.Firm` moves each to a free port.
    """
    master = load_instruments(instruments_file)
    codes = sorted(master)
    out = ["# Generated for bench.livestack: many small agents on the whole instrument master.\n"]
    for i in range(n):
        code = codes[i % len(codes)]
        strategy = STRATEGIES[(i // len(codes) + i) % len(STRATEGIES)]  # every code gets every strategy in turn
        out.append(f'[[agents]]\nid = "live-{i:03d}"\ncode = "{code}"\ndp = {30_000 + i}\nstrategy = "{strategy}"\n'
                   f"cash = {ALLOCATION_WON}\n[agents.params]\n{_params(strategy, master[code].last_close)}\n")
    return "".join(out)


def progress(text: str) -> None:
    """One line of progress on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class LiveStack:
    """The whole stack of one run directory with ``n`` live agents; always ended with ``stop()``."""

    def __init__(self, root: Path, n_agents: int, *, speed: float = 60.0, start_time: str = "08:55",
                 start_date: str = "", seed: int = 42) -> None:
        self.root = root
        self.run_dir = root / "run"
        self.config_dir = root / "configs"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        source = root / "roster.toml"
        source.write_text(live_roster(n_agents))
        # recon_interval_s: the reconciler's default (each round asks every agent's status page)
        self.firm = Firm(self.run_dir, speed=speed, start_time=start_time, start_date=start_date, seed=seed,
                         roster=source, recon_interval_s=60.0)
        # the dashboard reads <config_dir>/agents.toml, the supervisor the roster file: one file for both
        roster = self.config_dir / "agents.toml"
        shutil.copyfile(self.run_dir / "agents.toml", roster)
        self.firm.env["TRADER_CONFIG_DIR"] = str(self.config_dir)
        self.firm.env["TRADER_ROSTER_FILE"] = str(roster)
        self.agent_ids = sorted(self.firm.ports)
        self.url = f"http://127.0.0.1:{self.firm.env['TRADER_DASHBOARD__PORT']}"
        self.ctx = zmq.Context()
        self._publisher: Publisher | None = None
        self.agent_pids: dict[str, int] = {}
        self._stopped = False

    def endpoint(self, name: str) -> str:
        """An endpoint of this run by its settings name (``bus_in``, ``bus_out``, ...)."""
        return load_stack(run_dir=str(self.run_dir)).endpoint(name)

    def check_config(self) -> None:
        """``trader config check`` on this run's settings and roster; raises with its output if it fails."""
        out = self.firm.trader("config", "check")
        if out.returncode != 0:
            raise RuntimeError(f"trader config check failed ({out.returncode}):\n{out.stdout[-3000:]}{out.stderr[-3000:]}")

    def start(self) -> None:
        """Check the configuration, then start every Procfile process (the supervisor starts the agents)."""
        self.check_config()
        self.firm.start_all()
        progress(f"stack started in {self.run_dir}: {', '.join(self.firm.procs)}; dashboard {self.url}")

    def _dead_service(self) -> str:
        for name, p in self.firm.procs.items():
            if p.poll() is not None:
                log = self.run_dir / "logs" / f"{name}.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                return f"{name} exited with {p.returncode}:\n{tail}"
        return ""

    def _is_agent_process(self, pid: int, agent_id: str) -> bool:
        """Whether ``pid`` is this run's agent runtime for ``agent_id`` (not a stand-in publishing its name)."""
        try:
            proc = psutil.Process(pid)
            cmd = cmdline_of(proc)
            env = proc.environ()
        except psutil.Error:
            return False
        return (env.get("TRADER_RUN_DIR") == str(self.run_dir) and "agents.runtime" in cmd
                and agent_id in cmd)

    def wait_until_heartbeating(self, timeout_s: float = 900.0) -> float:
        """Wait until every service and every agent of the roster heartbeats; returns the seconds it took."""
        t0 = time.monotonic()
        sub = Subscriber(self.ctx, self.endpoint("bus_out"), [HEARTBEAT_TOPIC_PREFIX])
        services: set[str] = set()
        wanted = set(self.agent_ids)
        next_report = t0
        try:
            while True:
                for env in sub.drain():
                    hb = env.msg
                    if not isinstance(hb, Heartbeat):
                        continue
                    if hb.name in wanted and self.agent_pids.get(hb.name) != hb.pid:
                        if self._is_agent_process(hb.pid, hb.name):
                            self.agent_pids[hb.name] = hb.pid
                    elif hb.name in HEARTBEATING_SERVICES:
                        services.add(hb.name)
                now = time.monotonic()
                done = len(self.agent_pids) == len(wanted) and services == set(HEARTBEATING_SERVICES)
                if done or now >= next_report:
                    next_report = now + PROGRESS_EVERY_S
                    missing = sorted(set(HEARTBEATING_SERVICES) - services)
                    progress(f"{now - t0:5.0f} s: {len(self.agent_pids)}/{len(wanted)} agents heartbeating, "
                             f"services {len(services)}/{len(HEARTBEATING_SERVICES)}"
                             + (f" (waiting for {', '.join(missing)})" if missing else ""))
                if done:
                    return now - t0
                dead = self._dead_service()
                if dead:
                    raise RuntimeError(f"a service of the live stack died: {dead}")
                if now - t0 > timeout_s:
                    late = sorted(wanted - set(self.agent_pids))
                    raise TimeoutError(f"after {timeout_s:.0f} s, {len(late)} agent(s) never heartbeat: {late[:20]}")
                time.sleep(0.2)
        finally:
            sub.close()

    def trading(self) -> str:
        """What the agents did, from the journal: orders, fills, and how many agents had a fill."""
        path = self.run_dir / "journal.sqlite"
        if not path.exists():
            return "no journal"
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            orders, agents_ordering = db.execute("SELECT count(*), count(DISTINCT agent_id) FROM orders").fetchone()
            fills, agents_filled = db.execute("SELECT count(*), count(DISTINCT agent_id) FROM fills").fetchone()
        except sqlite3.Error as exc:
            return f"journal not readable: {exc}"
        finally:
            db.close()
        return f"{orders} orders from {agents_ordering} agents, {fills} fills for {agents_filled} agents"

    def live_agent_pids(self) -> set[int]:
        """The pids of the agents that heartbeat, those still alive."""
        return {pid for pid in self.agent_pids.values() if psutil.pid_exists(pid)}

    def publisher(self) -> Publisher:
        """A publisher on this stack's bus, owned by the calling process."""
        if self._publisher is None:
            self._publisher = Publisher(self.ctx, self.endpoint("bus_in"), "bench")
        return self._publisher

    def stop(self) -> None:
        """``trader down``, then kill every process of the run directory; reports what was left on stderr."""
        if self._stopped:
            return
        self._stopped = True
        if self._publisher is not None:
            self._publisher.close()
        self.ctx.destroy(linger=0)
        progress("stopping the live stack (trader down)")
        # a second Ctrl-C must not break off the stop half-way: the stack's processes live in sessions of their own
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            clean, detail = self.firm.stop()
            left = self.firm.leftovers()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        progress("live stack stopped" + ("" if clean else f" (not cleanly: {detail})")
                 + (f"; STILL RUNNING: {[p.pid for p in left]}" if left else ""))
