"""The venue a benchmark trades through: the paper exchange, or the KIS gateway in front of a local kis-sim.

``paper`` is the stack's default venue (``services.exchange``). ``kis-sim`` is
``broker.kind = "kis"``: the gateway (``services.kis_gateway``) talking REST and
WebSocket to ``python -m services.kis_sim --stack`` on free loopback ports, both
started as the Procfile starts them (``services.cli.stack.stack_entries``). For
a benchmark the pace is raised on both sides (the gateway's
``broker.kis.rate_per_s``, and kis-sim --stack allows a quarter more), and
kis-sim's market starts in continuous trading, so the figures measure the firm,
the gateway and kis-sim rather than KIS's published 2 calls a second.
"""

from __future__ import annotations

import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import zmq

from bus.pidlock import LockOwner
from bus.pubsub import Subscriber
from core.config import StackSettings
from core.messages import Heartbeat
from core.venue import FEED_HEARTBEAT_TOPIC
from services.broker.base import BrokerError, BrokerUnavailable
from services.broker.venue import VenueBroker
from services.cli.stack import stack_entries

VENUES = ("paper", "kis-sim")
GATEWAY_RATE_PER_S = 4000  # the gateway's pace; kis-sim --stack then allows 5,000 calls a second
SIM_SPEED = 5.0  # kis-sim's market seconds per wall second, as the paper benchmarks run the paper world
SIM_START_TIME = "09:05"  # continuous trading from the first second: orders are accepted at once
VENUE_HELP = (f"the venue orders go to: 'paper' (the paper exchange, the stack's default) or 'kis-sim' "
              f"(broker.kind = \"kis\": the KIS gateway and the local KIS server on free loopback ports, "
              f"rate limits raised to {GATEWAY_RATE_PER_S} calls/s at the gateway and a quarter more at kis-sim, "
              f"kis-sim's market at x{SIM_SPEED:g} from {SIM_START_TIME}, so it is open during the run)")


ORDER_PATH = ("market-data", "risk-guard", "order-manager")  # started after the bus and the venue's processes
_VENUE_PROCESSES = {"paper": ("exchange",), "kis-sim": ("kis-sim", "kis-gateway")}


def order_path_commands(venue: str) -> dict[str, list[str]]:
    """The processes of the order path on ``venue`` in start order, Procfile name -> argv (``python`` made this one).

    The bus, the venue's processes, market data, risk guard and order manager, as the stack's Procfile starts
    them for ``broker.kind`` (``stack_entries``).
    """
    entries = dict(stack_entries(kind="paper" if venue == "paper" else "kis"))
    out = {}
    for name in ("bus", *_VENUE_PROCESSES[venue], *ORDER_PATH):
        argv = shlex.split(entries[name])
        out[name] = [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]
    return out


def venue_env(venue: str) -> dict[str, str]:
    """The TRADER_ settings that make ``venue`` the stack's venue ({} for paper, the stack's default)."""
    if venue == "paper":
        return {}
    return {"TRADER_BROKER__KIND": "kis",
            "TRADER_BROKER__KIS__REST_URL": f"http://127.0.0.1:{_free_port()}",
            "TRADER_BROKER__KIS__WS_URL": f"ws://127.0.0.1:{_free_port()}",
            "TRADER_BROKER__KIS__RATE_PER_S": str(GATEWAY_RATE_PER_S),
            "TRADER_BROKER__KIS__SIM_SPEED": str(SIM_SPEED),
            "TRADER_CLOCK__START_TIME": SIM_START_TIME}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(ctx: zmq.Context, settings: StackSettings, timeout_s: float) -> dict[str, Any]:
    """Block until the venue's feed heartbeat says ``ready`` (the gateway's stream is up and caught up); its info."""
    sub = Subscriber(ctx, settings.endpoint("exchange_feed"), [FEED_HEARTBEAT_TOPIC])
    try:
        deadline = time.monotonic() + timeout_s
        info: dict[str, Any] = {}
        while (left := deadline - time.monotonic()) > 0:
            env = sub.recv(timeout_ms=int(left * 1000) + 1)
            if env is not None and isinstance(env.msg, Heartbeat):
                info = dict(env.msg.info)
                if info.get("ready"):
                    return info
        raise TimeoutError(f"the venue was not ready within {timeout_s:.0f} s (last heartbeat {info or 'none'})")
    finally:
        sub.close()


class LocalKis:
    """The local kis-sim's rehearsal controls (``/kis-sim/status``, ``/kis-sim/fault``) on its REST port."""

    def __init__(self, settings: StackSettings) -> None:
        rest_url, _ = settings.broker.kis.urls()
        self.http = httpx.Client(base_url=rest_url, timeout=2.0)

    def status(self) -> dict[str, Any]:
        return dict(self.http.get("/kis-sim/status").raise_for_status().json())

    def fault(self, name: str, **args: Any) -> dict[str, Any]:
        return dict(self.http.post("/kis-sim/fault", json={"name": name, **args}).raise_for_status().json())

    def answers(self, timeout_s: float = 0.05) -> bool:
        """Whether kis-sim answers its status now."""
        try:
            self.http.get("/kis-sim/status", timeout=timeout_s).raise_for_status()
        except httpx.HTTPError:
            return False
        return True

    def close(self) -> None:
        self.http.close()


# kis-sim runs under uvicorn, which re-raises a SIGTERM after its shutdown: the process then dies before it
# releases its pid lock. On SIGINT (its Ctrl-C) it unwinds and releases it.
STOP_SIGNALS = {"kis-sim": signal.SIGINT}


def stop_all(procs: list[tuple[str, subprocess.Popen[bytes]]], run_dir: Path | None = None,
             timeout_s: float = 10.0) -> None:
    """Stop a benchmark's processes, the last started first: each its clean-stop signal, KILL after ``timeout_s``.

    A second Ctrl-C or SIGTERM meanwhile is ignored, so it cannot leave a process behind. With ``run_dir``,
    the pid locks these processes left there (one that was killed cannot remove its own) are removed.
    """
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for name, proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(STOP_SIGNALS.get(name, signal.SIGTERM))
        for _, proc in reversed(procs):
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if run_dir is not None:
        mine = {proc.pid for _, proc in procs}
        for lock in (run_dir / "run").glob("*.pid"):
            owner = LockOwner.parse(lock.read_text(errors="replace"))
            if owner is not None and owner.pid in mine and not owner.is_alive():
                lock.unlink(missing_ok=True)


@dataclass
class StreamWatch:
    """The gateway's WebSocket reconnects, seen by polling its ``status``: when attempts began and ended.

    The gateway's stream announces a failed attempt's backoff only in its
    status (``stream.last_backoff_s``, with ``backoff_step`` and ``attempts``);
    each change is stamped when a poll first sees it, so a stamp lies at most
    one poll after the event.
    """

    venue: VenueBroker
    began: list[float] = field(default_factory=list)  # monotonic, an attempt first seen started
    ended: list[tuple[float, float]] = field(default_factory=list)  # (monotonic, the backoff it announced)
    _last: tuple[int, int, float] | None = None

    def poll(self) -> None:
        try:
            st = self.venue.command("status")["stream"]
        except (BrokerError, BrokerUnavailable):
            return  # the next poll sees the change
        now = time.monotonic()
        seen = (int(st["attempts"]), int(st["backoff_step"]), float(st["last_backoff_s"]))
        if self._last is not None:
            if seen[0] > self._last[0]:
                self.began.append(now)
            if seen[1:] != self._last[1:]:
                self.ended.append((now, seen[2]))
        self._last = seen

    def pending_backoff(self, t_back: float) -> tuple[float, float | None]:
        """(backoff wait still pending at ``t_back``, the last attempt's start after ``t_back``), in s.

        The last attempt seen is the one that succeeded; it was due the
        backoff after the attempt that failed before it, and began no later
        than first seen: the earlier of the two is when it was due.
        """
        if not self.began:
            return 0.0, None
        start = self.began[-1]
        due = start
        before = [(t, wait) for t, wait in self.ended if t <= start]
        if before:
            due = min(due, before[-1][0] + before[-1][1])
        return max(0.0, due - t_back), start - t_back
