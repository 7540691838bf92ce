"""A small firm of real processes for the dashboard's tests and benchmark.

``Firm`` starts the bus proxy, a stand-in publisher (``python -m
tests.dashboard.firm``: heartbeats of the exchange, the market-data feed and
every agent of a roster, ticks of a few codes, an alert now and then) and, on
request, the dashboard itself (``python -m dashboard`` on a free port), each
with ``TRADER_RUN_DIR`` set to a temporary directory; ``stop()`` ends every
process it started (terminate, wait, kill). The test process can publish its
own messages on the same bus with ``publisher()``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import zmq

from bus.pubsub import Publisher
from core.config import PROJECT_ROOT, StackSettings, load_stack
from core.messages import Alert, AlertLevel, Heartbeat, Tick
from dashboard.roster import load_roster
from tests.ports import free_port

STANDIN_SERVICES = ("exchange", "market-data")
STANDIN_CODES = {"005930": 70_000, "005935": 58_000, "000660": 180_000}


def wait_until(condition: Callable[[], object], timeout_s: float, what: str) -> object:
    """Poll ``condition`` until it returns something truthy; raise AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


class Firm:
    """Real processes of a test stack under one run directory; always stopped by ``stop()``."""

    def __init__(self, run_dir: Path, *, config_dir: Path | None = None, token: str = "",
                 extra_env: dict[str, str] | None = None) -> None:
        self.run_dir = run_dir
        self.config_dir = config_dir
        self.token = token
        self.extra_env = dict(extra_env or {})  # more TRADER_* settings for every process (e.g. the venue)
        self.port = 0
        self.procs: dict[str, subprocess.Popen] = {}
        self._ctx: zmq.Context | None = None
        self._publisher: Publisher | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment every process of this firm runs with."""
        env = {**os.environ, "TRADER_RUN_DIR": str(self.run_dir), "PYTHONUNBUFFERED": "1"}
        env.pop("TRADER_DASHBOARD_TOKEN", None)
        if self.token:
            env["TRADER_DASHBOARD_TOKEN"] = self.token
        if self.config_dir is not None:
            env["TRADER_CONFIG_DIR"] = str(self.config_dir)
        if self.port:
            env["TRADER_DASHBOARD__PORT"] = str(self.port)
        env.update(self.extra_env)
        return env

    @property
    def settings(self) -> StackSettings:
        """The settings the processes see."""
        overrides: dict[str, object] = {"run_dir": str(self.run_dir)}
        if self.config_dir is not None:
            overrides["config_dir"] = str(self.config_dir)
        return load_stack(**overrides)

    @property
    def url(self) -> str:
        """The dashboard's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, name: str, module: str, *args: str) -> subprocess.Popen:
        """Start ``python -m module args`` as process ``name`` with its output in <run_dir>/<name>.log."""
        with open(self.run_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        """What process ``name`` has written so far."""
        path = self.run_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start_bus(self) -> None:
        """Start the bus proxy and wait until both of its sockets exist."""
        proc = self.start("bus", "bus.proxy")
        settings = self.settings
        for ep in ("bus_in", "bus_out"):
            path = Path(settings.endpoint(ep).removeprefix("ipc://"))
            wait_until(lambda: path.exists() or proc.poll() is not None, 10, f"the bus socket {path}")
            if proc.poll() is not None:
                raise AssertionError(f"bus proxy exited:\n{self.log('bus')}")

    def start_standin(self, interval_s: float = 0.2) -> None:
        """Start the stand-in publisher of heartbeats, ticks and alerts."""
        self.start("standin", "tests.dashboard.firm", str(interval_s))

    def start_dashboard(self) -> None:
        """Start ``python -m dashboard`` on a free port and wait until /healthz answers."""
        self.port = self.port or free_port()
        proc = self.start("dashboard", "dashboard")

        def healthy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"dashboard exited with {proc.returncode}:\n{self.log('dashboard')}")
            try:
                return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 20, "the dashboard to answer /healthz")

    def stop_process(self, name: str) -> None:
        """Terminate one process (kill it if it does not stop within 5 s)."""
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def publisher(self) -> Publisher:
        """A publisher on this firm's bus, owned by the calling process."""
        if self._publisher is None:
            self._ctx = zmq.Context()
            self._publisher = Publisher(self._ctx, self.settings.endpoint("bus_in"), "test")
        return self._publisher

    def stop(self) -> None:
        """Stop every process started here and close the test's own sockets."""
        for name in reversed(list(self.procs)):
            self.stop_process(name)
        if self._publisher is not None:
            self._publisher.close()
        if self._ctx is not None:
            self._ctx.destroy(linger=0)
        self._publisher, self._ctx = None, None


def run_standin(interval_s: float) -> None:
    """The stand-in publisher's loop: until SIGTERM, publish heartbeats, ticks and alerts."""
    settings = load_stack()
    roster, _ = load_roster(settings.config_dir)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    ctx = zmq.Context()
    pub = Publisher(ctx, settings.endpoint("bus_in"), "standin")
    rng = random.Random(7)
    prices = dict(STANDIN_CODES)
    cum = dict.fromkeys(prices, 0)
    rounds = 0
    time.sleep(0.3)  # let the connection to the proxy settle before the first message
    pub.publish("sys.alert", Alert(level=AlertLevel.WARNING, source="standin", kind="started", text="stand-in firm is up", ts_ns=time.time_ns()))
    try:
        while not stopping:
            now = time.time_ns()
            for name in STANDIN_SERVICES:
                pub.publish(f"sys.heartbeat.{name}", Heartbeat(name=name, pid=os.getpid(), ts_ns=now, rss_bytes=50 << 20, cpu_pct=1.5))
            for entry in roster:
                code = entry.codes[0] if entry.codes else "005930"
                last = prices.get(code, 10_000)
                book = {
                    "cash_won": entry.allocation_won - 10 * last,
                    "realized_pnl_won": rounds,
                    "unrealized_pnl_won": 0,
                    "return_on_allocation": rounds / max(entry.allocation_won, 1),
                    "open_orders": 1,
                    "positions": {code: {"qty": 10, "avg_price": last, "last_price": last}},
                }
                info = {"agent_id": entry.id, "strategy": entry.strategy, "codes": list(entry.codes), "book": book}
                pub.publish(f"sys.heartbeat.{entry.id}", Heartbeat(name=entry.id, pid=os.getpid(), ts_ns=now, info=info))
            for code in prices:
                prices[code] += rng.choice((-100, 0, 100))
                cum[code] += 10
                pub.publish(f"md.tick.{code}", Tick(code=code, ts_ns=now, price=prices[code], qty=10, cum_volume=cum[code]))
            rounds += 1
            if rounds % 50 == 0:
                pub.publish("sys.alert", Alert(level=AlertLevel.INFO, source="standin", kind="periodic", text=f"round {rounds}", ts_ns=now))
            time.sleep(interval_s)
    finally:
        pub.close()
        ctx.destroy(linger=200)


if __name__ == "__main__":
    run_standin(float(sys.argv[1]) if len(sys.argv) > 1 else 0.2)
