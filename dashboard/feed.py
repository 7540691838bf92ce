"""The dashboard's ZeroMQ side: a bus listener thread, an RPC poller thread, and control calls.

Everything here runs off the web server's event loop, on threads with their own
ZeroMQ context (a context is created in this process, never inherited), so no
blocking ZeroMQ call ever runs inside the loop. The listener also publishes the
dashboard's own heartbeat, like every process of the stack.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import Any

import psutil
import zmq

from bus.pubsub import HEARTBEAT_TOPIC_PREFIX, Publisher, Subscriber
from bus.rpc import RpcClient, RpcFailure
from core.config import StackSettings
from core.messages import Command, CommandResult, Heartbeat
from dashboard.state import GATEWAY_STATUS, FirmState

log = logging.getLogger("dashboard.feed")

TOPICS = ["md.", "oms.event.", "risk.state", "recon.report", "sys."]
POLL_INTERVAL_S = 2.0
RPC_POLL_TIMEOUT_MS = 500
# A control action waits at least this long per attempt: the supervisor may be busy
# (checking orders after an agent stopped) on a loaded machine, and the retries
# carry the same command id, so a slow answer is never a second action.
CONTROL_TIMEOUT_MS = 3_000

# (state key, endpoint name, command name): what the poller asks each service.
POLLS = (
    ("supervisor.list", "supervisor_rpc", "list"),
    ("risk_guard.status", "risk_guard_rpc", "status"),
    ("reconciler.latest", "reconciler_rpc", "latest"),
    ("order_manager.positions", "order_manager_rpc", "positions"),
)
# With broker.kind = "kis" the venue's ROUTER is the KIS gateway's: its status names the streamed and polled codes.
KIS_GATEWAY_POLL = (GATEWAY_STATUS, "exchange_rpc", "status")


MAX_BATCH = 500  # bus messages applied before the pages are woken


def polls(settings: StackSettings) -> tuple[tuple[str, str, str], ...]:
    """What the poller asks, for the venue this stack runs."""
    return (*POLLS, KIS_GATEWAY_POLL) if settings.broker.kind == "kis" else POLLS

# What a control action is sent to: action -> (endpoint name, command name).
ACTIONS = {
    "spawn": ("supervisor_rpc", "spawn"),
    "kill": ("supervisor_rpc", "kill"),
    "restart": ("supervisor_rpc", "restart"),
    "halt": ("risk_guard_rpc", "halt"),
    "resume": ("risk_guard_rpc", "resume"),
    "reduce": ("risk_guard_rpc", "reduce"),
    "ledger_adjust": ("order_manager_rpc", "ledger_adjust"),
    "recon_run": ("reconciler_rpc", "run"),
}
# A reconciliation gathers every view and looks twice at a difference before it answers.
RECON_RUN_TIMEOUT_MS = 15_000


def call_command(
    ctx: zmq.Context,
    settings: StackSettings,
    endpoint_name: str,
    name: str,
    args: dict[str, Any] | None = None,
    *,
    timeout_ms: int | None = None,
    retries: int | None = None,
    client: RpcClient | None = None,
) -> CommandResult:
    """Send one Command to a service and return its CommandResult; failures become ok=False results.

    With ``client`` (a read-only query from the poller) that client's socket is used and kept open,
    and no idempotency key is sent; without, a client is made for this one state-changing command.
    """
    command_id = f"dashboard-{uuid.uuid4().hex}"
    own = client is None
    if client is None:
        client = RpcClient(
            ctx,
            settings.endpoint(endpoint_name),
            timeout_ms=timeout_ms or settings.bus.rpc_timeout_ms,
            retries=settings.bus.rpc_retries if retries is None else retries,
            sender="dashboard",
        )
    try:
        reply = client.call(
            Command(command_id=command_id, name=name, args=args or {}, who="dashboard", ts_ns=time.time_ns()),
            idempotency_key=command_id if own else None,
        )
    except RpcFailure as exc:
        reason = getattr(exc, "reason_code", type(exc).__name__.upper())
        return CommandResult(command_id=command_id, ok=False, error=str(exc), reason_code=f"RPC_{reason}".upper())
    finally:
        if own:
            client.close()
    if isinstance(reply, CommandResult):
        return reply
    return CommandResult(command_id=command_id, ok=True, result=reply.model_dump(mode="json"))


class BusFeed:
    """Keeps ``FirmState`` current from the bus and the services' RPC, on two daemon threads."""

    def __init__(self, settings: StackSettings, state: FirmState) -> None:
        self.settings = settings
        self.state = state
        self.ctx = zmq.Context()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._process = psutil.Process()
        self._started: dict[tuple[str, int], int] = {}

    def start(self) -> None:
        """Start the listener and the poller."""
        for target, name in ((self._listen, "dashboard-bus"), (self._poll, "dashboard-rpc")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stop both threads and destroy the context (every socket has a finite LINGER)."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=3)
        self.ctx.destroy(linger=self.settings.bus.linger_ms)

    def command(self, action: str, args: dict[str, Any]) -> CommandResult:
        """Run a control action (spawn, kill, restart, halt, resume, reduce); call it from a worker thread."""
        endpoint_name, name = ACTIONS[action]
        timeout_ms = max(CONTROL_TIMEOUT_MS, self.settings.bus.rpc_timeout_ms)
        if action == "recon_run":
            timeout_ms = max(timeout_ms, RECON_RUN_TIMEOUT_MS)
        return call_command(self.ctx, self.settings, endpoint_name, name, args, timeout_ms=timeout_ms)

    def ask(self, endpoint_name: str, name: str, args: dict[str, Any] | None = None) -> CommandResult:
        """A read-only query to a service, failing fast (one attempt); call it from a worker thread."""
        return call_command(self.ctx, self.settings, endpoint_name, name, args, timeout_ms=RPC_POLL_TIMEOUT_MS, retries=0)

    # --- threads ------------------------------------------------------------

    def _listen(self) -> None:
        bus = self.settings.bus
        sub = Subscriber(
            self.ctx,
            self.settings.endpoint("bus_out"),
            TOPICS,
            rcvhwm=bus.rcvhwm,
            linger_ms=bus.linger_ms,
            on_gap=self.state.on_gap,
        )
        pub = Publisher(self.ctx, self.settings.endpoint("bus_in"), "dashboard", sndhwm=bus.sndhwm, linger_ms=bus.linger_ms)
        next_second = time.monotonic()
        try:
            while not self._stop.is_set():
                env = sub.recv(timeout_ms=1000)  # a stop waits at most this long
                batch = 0
                while env is not None:  # what has arrived is applied as one batch, the pages woken once for it
                    self.state.apply(env.topic, env.sender, env.msg, time.time_ns(), notify=False)
                    batch += 1
                    env = sub.recv(timeout_ms=0) if batch < MAX_BATCH else None
                if batch:
                    self.state.notify()
                now = time.monotonic()
                if now >= next_second:
                    next_second = now + bus.heartbeat_interval_s
                    self.state.set_bad_frames(sub.rejected)
                    self.state.mark_rates(time.time_ns())
                    self._heartbeat(pub)
        except zmq.ContextTerminated:
            pass
        finally:
            sub.close()
            pub.close()

    def _heartbeat(self, pub: Publisher) -> None:
        try:
            rss = self._process.memory_info().rss
            cpu = self._process.cpu_percent(interval=None)
        except psutil.Error:
            rss, cpu = 0, 0.0
        pub.publish(
            HEARTBEAT_TOPIC_PREFIX + "dashboard",
            Heartbeat(
                name="dashboard",
                pid=os.getpid(),
                ts_ns=time.time_ns(),
                rss_bytes=rss,
                cpu_pct=cpu,
                last_seq=pub.last_seq,
                info=pub.heartbeat_info(),
            ),
        )

    def _poll(self) -> None:
        # one connection per service, kept between rounds (a client closes its socket after a timeout)
        clients = {endpoint_name: RpcClient(self.ctx, self.settings.endpoint(endpoint_name), timeout_ms=RPC_POLL_TIMEOUT_MS,
                                            retries=0, sender="dashboard") for _, endpoint_name, _ in polls(self.settings)}
        try:
            self._poll_rounds(clients)
        finally:
            for client in clients.values():
                client.close()

    def _poll_rounds(self, clients: dict[str, RpcClient]) -> None:
        while not self._stop.is_set():
            for key, endpoint_name, name in polls(self.settings):
                if self._stop.is_set():
                    return
                try:
                    res = call_command(self.ctx, self.settings, endpoint_name, name, client=clients[endpoint_name])
                except zmq.ContextTerminated:
                    return
                self.state.set_rpc(key, res.ok, res.result, res.error, time.time_ns())
            self._record_start_times()
            self._stop.wait(POLL_INTERVAL_S)

    def _record_start_times(self) -> None:
        for name, pid in self.state.pids().items():
            started = self._started.get((name, pid))
            if started is None:
                try:
                    started = int(psutil.Process(pid).create_time() * 1e9)
                except psutil.Error:
                    continue  # another machine's or a gone process: no uptime
                self._started[(name, pid)] = started
            self.state.set_started(name, started)
