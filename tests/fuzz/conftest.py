"""A stack of real processes for the fuzz tests, always stopped, with a view of their heartbeats."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from bus.pubsub import Subscriber
from core.config import PROJECT_ROOT
from core.messages import Heartbeat
from tests.ports import free_port

START_TIMEOUT_S = 60.0

# module -> the name it heartbeats under
CORE_PROCESSES = {
    "bus.proxy": "bus",
    "services.exchange": "exchange",
    "services.market_data": "market-data",
    "services.order_manager": "order-manager",
    "services.risk_guard": "risk-guard",
    "services.reconciler": "reconciler",
    "services.supervisor": "supervisor",
}


def wait_for(condition: Callable[[], Any], timeout_s: float = 30.0, what: str = "condition") -> Any:
    """Poll until ``condition()`` is truthy; fail naming ``what`` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


def stack_env(run_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a test stack: its run dir, an empty roster, fast heartbeats, two codes."""
    roster = run_dir / "agents.toml"
    roster.write_text("# no agents\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADER_")}
    env.update({
        "TRADER_RUN_DIR": str(run_dir),
        "TRADER_ROSTER_FILE": str(roster),
        "TRADER_BUS__HEARTBEAT_INTERVAL_S": "0.2",
        "TRADER_CLOCK__START_DATE": "2026-03-03",
        "TRADER_CLOCK__START_TIME": "10:00",
        "TRADER_CLOCK__SPEED": "60",
        "TRADER_MARKET__CODES": '["005930", "000660"]',
        "TRADER_RECONCILE__AGENT_BOOKS": "false",
        "TRADER_DASHBOARD__PORT": str(free_port()),
    })
    env.update(extra)
    return env


class Stack:
    """Processes started from their modules, their logs under ``<run_dir>/logs``, and their heartbeats."""

    def __init__(self, run_dir: Path, env: dict[str, str]) -> None:
        self.run_dir = run_dir
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ctx = zmq.Context()
        self.beats: dict[str, Heartbeat] = {}
        self._hb: Subscriber | None = None
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)

    def endpoint(self, name: str) -> str:
        """An endpoint of this stack (the defaults: ipc files under ``<run_dir>/run``)."""
        override = self.env.get(f"TRADER_ENDPOINTS__{name.upper()}")
        return override or f"ipc://{self.run_dir}/run/{name.replace('_', '-')}.sock"

    def start(self, module: str, name: str | None = None) -> subprocess.Popen[bytes]:
        """Start ``python -m module`` in its own process group, logging to ``logs/<name>.log``."""
        name = name or CORE_PROCESSES.get(module, module)
        with open(self.run_dir / "logs" / f"{name}.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", module], cwd=PROJECT_ROOT, env=self.env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def log_tail(self, name: str, chars: int = 3000) -> str:
        """The end of one process's log (for failure messages)."""
        path = self.run_dir / "logs" / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def assert_alive(self) -> None:
        """Fail naming every process that has exited, with its log."""
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        assert not dead, f"processes exited: {dead}\n" + "\n".join(f"--- {n}\n{self.log_tail(n)}" for n in dead)

    def heartbeats(self) -> dict[str, Heartbeat]:
        """The latest heartbeat of every process heard so far."""
        if self._hb is None:
            self._hb = Subscriber(self.ctx, self.endpoint("bus_out"), ["sys.heartbeat."])
        for env in self._hb.drain():
            self.beats[env.msg.name] = env.msg  # type: ignore[attr-defined]
        return self.beats

    def fresh_heartbeat(self, name: str, after_ns: int, timeout_s: float = 30.0) -> Heartbeat:
        """The first heartbeat of ``name`` stamped after ``after_ns``."""
        def newer() -> Heartbeat | None:
            self.assert_alive()
            hb = self.heartbeats().get(name)
            return hb if hb is not None and hb.ts_ns > after_ns else None
        return wait_for(newer, timeout_s, f"a fresh heartbeat of {name}")

    def rejected_frames(self, name: str, timeout_s: float = 30.0) -> dict[str, int]:
        """A process's rejected frames by reason, from a heartbeat sent after this call."""
        return dict(self.fresh_heartbeat(name, time.time_ns(), timeout_s).info.get("rejected_frames", {}))

    def wait_running(self, names: list[str], timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until each named process has sent a heartbeat."""
        def all_heard() -> bool:
            self.assert_alive()
            return all(n in self.heartbeats() for n in names)
        wait_for(all_heard, timeout_s, f"heartbeats of {names}")

    def stop(self) -> None:
        """SIGTERM every process, then SIGKILL its group if it has not gone within 10 s."""
        if self._hb is not None:
            self._hb.close()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        self.ctx.destroy(linger=0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The bus, the exchange and every core service, running until the module's tests are done."""
    run_dir = tmp_path_factory.mktemp("fz")
    s = Stack(run_dir, stack_env(run_dir))
    try:
        for module in CORE_PROCESSES:
            s.start(module)
        s.wait_running(list(CORE_PROCESSES.values()))
        yield s
    finally:
        s.stop()
