"""The risk guard process: RPC decisions, the bus view, the kill switch, ``risk.state``.

RPC on ``risk_guard_rpc``:

* ``OrderRequest`` -> ``CommandResult(ok=True, result={"approved", "reason_code", "text"})``
* ``CancelRequest`` -> always approved (taking an order off never adds risk)
* ``Command`` ``halt`` / ``reduce`` / ``resume`` (args ``{who, why}``, ``reason`` for ``why``) -> the new status;
  ``status`` -> state, reason, limits and per-agent usage.
  Anything else -> an error ``CommandResult`` with a reason code.

It follows ``oms.event.*`` and ``md.*`` on the bus, asks the order manager
(``journal_state``) and market-data (``snapshot``) for a sync at start (retried
each second until both answer; HALTED meanwhile), journals every state change
in ``<run_dir>/journal.sqlite`` (see ``journal.py``) and publishes ``risk.state``
on every change and every ``STATE_EVERY_S`` seconds.
"""

from __future__ import annotations

import time
import uuid

from agents.settings import check_roster
from bus.pubsub import Subscriber
from bus.rpc import RequestInfo, RpcClient, RpcFailure, RpcServer
from bus.service import Service
from core.config import ConfigError, StackSettings, project_path
from core.instruments import InstrumentError, load_instruments
from core.messages import (
    AlertLevel,
    CancelRequest,
    Command,
    CommandResult,
    Message,
    OrderRequest,
    RiskState,
)
from core.risk import TradingState, load_risk_limits
from services.risk_guard.guard import OPERATOR_COMMANDS, AgentAllocation, RiskGuard, StateChange
from services.risk_guard.journal import RiskJournal

RISK_STATE_TOPIC = "risk.state"
BUS_TOPICS = ["oms.event.", "md.tick.", "md.session", "md.ref."]
STATE_EVERY_S = 5.0
SYNC_EVERY_S = 1.0
SYNC_TIMEOUT_MS = 500
UNKNOWN_COMMAND = "UNKNOWN_COMMAND"
UNSUPPORTED_REQUEST = "UNSUPPORTED_REQUEST"


class RiskGuardService(Service):
    """The process around :class:`RiskGuard`."""

    service_name = "risk-guard"
    timer_interval_s = 0.5  # the state is published every STATE_EVERY_S; sync retries each SYNC_EVERY_S

    def __init__(self, name: str, settings: StackSettings) -> None:
        super().__init__(name, settings)
        self.guard: RiskGuard | None = None
        self.journal: RiskJournal | None = None
        self.rpc: RpcServer | None = None
        self.bus: Subscriber | None = None
        self.oms: RpcClient | None = None
        self.market: RpcClient | None = None
        self._next_sync = 0.0
        self._next_state = 0.0
        self._published: tuple[str, str] | None = None
        self.decisions = {"approved": 0, "refused": 0}

    # --- start and stop ------------------------------------------------------

    def setup(self) -> None:
        s = self.settings
        limits = load_risk_limits(project_path(s.risk_file))
        try:
            instruments = load_instruments(project_path(s.market.instruments_file))
        except (OSError, InstrumentError) as exc:
            raise ConfigError([(s.market.instruments_file, "-", str(exc))]) from exc
        roster = check_roster(project_path(s.roster_file), instruments, s)
        for problem in roster.problems:
            self.log.warning("roster: %s (agent left out)", problem)
        allocations = [
            AgentAllocation(a.id, a.cash, {a.all_codes[0]: (a.start_qty, a.start_avg_price)} if a.start_qty else {})
            for a in roster.valid_agents
        ]
        self.journal = RiskJournal(s.run_path / "journal.sqlite")
        persisted = self.journal.latest()
        if persisted is not None:
            self.log.info("restoring the persisted state %s (%s, by %s)", persisted.state, persisted.reason, persisted.who)
        self.guard = RiskGuard(limits, instruments, allocations, persisted)
        assert self.ctx is not None
        self.bus = Subscriber(self.ctx, s.endpoint("bus_out"), BUS_TOPICS, rcvhwm=s.bus.rcvhwm, linger_ms=s.bus.linger_ms,
                              heartbeats_from=["order-manager", "market-data"])
        self.add_socket(self.bus.socket, self._on_bus)
        self.oms = RpcClient(self.ctx, s.endpoint("order_manager_rpc"), timeout_ms=SYNC_TIMEOUT_MS, retries=0, sender=self.name)
        self.market = RpcClient(self.ctx, s.endpoint("market_data_rpc"), timeout_ms=SYNC_TIMEOUT_MS, retries=0, sender=self.name)
        self.rpc = RpcServer(self.ctx, s.endpoint("risk_guard_rpc"), self.handle_request, name=self.name, linger_ms=s.bus.linger_ms)
        self.add_socket(self.rpc.socket, self.rpc.handle_ready)
        self._publish_state(force=True)

    def teardown(self) -> None:
        for client in (self.oms, self.market):
            if client is not None:
                client.close()
        if self.journal is not None:
            self.journal.close()

    # --- the loop --------------------------------------------------------------

    def on_timer(self, now_monotonic: float) -> None:
        assert self.guard is not None
        if not self.guard.consistent and now_monotonic >= self._next_sync:
            self._next_sync = now_monotonic + SYNC_EVERY_S
            self._sync()
        if now_monotonic >= self._next_state:
            self._publish_state(force=True)

    def _sync(self) -> None:
        guard = self.guard
        assert guard is not None and self.oms is not None and self.market is not None
        now = time.time_ns()
        if not guard.session:
            result = self._ask(self.market, "snapshot", {"bars": 0}, "market-data")
            if isinstance(result, dict):
                guard.load_market(result, now)
        if not guard.journal_synced:
            result = self._ask(self.oms, "journal_state", {}, "order manager")
            if isinstance(result, dict):
                problems = guard.load_journal(result, now)
                if problems:
                    self.alert(AlertLevel.WARNING, "risk_sync_skipped", f"journal sync skipped {len(problems)} record(s): {problems[:3]}")
        if guard.consistent:
            self.log.info("view consistent: state %s", guard.state)
        self._publish_state()

    def _ask(self, client: RpcClient, name: str, args: dict, who: str) -> object:
        try:
            reply = client.call(Command(command_id=f"{self.name}-{uuid.uuid4().hex[:12]}", name=name, args=args))
        except RpcFailure as exc:
            self.log.info("sync: %s not available yet: %s", who, exc)
            return None
        if isinstance(reply, CommandResult) and reply.ok:
            return reply.result
        self.log.warning("sync: %s refused %s: %s", who, name, getattr(reply, "error", type(reply).__name__))
        return None

    def _on_bus(self) -> None:
        assert self.bus is not None and self.guard is not None
        for env in self.bus.drain():
            change = self.guard.on_message(env.msg, time.time_ns())
            if change is not None:
                self._apply_change(change, AlertLevel.CRITICAL, "loss_limit")
        for agent_id in self.guard.newly_over_limit():
            self.alert(AlertLevel.ERROR, "agent_loss_limit", f"agent {agent_id} reached its daily loss limit: it may only reduce")
        self._publish_state()

    # --- RPC -------------------------------------------------------------------

    def handle_request(self, msg: Message, info: RequestInfo) -> Message:
        """Decide an order, pass a cancel, or run a command."""
        guard = self.guard
        assert guard is not None
        if isinstance(msg, OrderRequest):
            decision = guard.decide(msg, time.time_ns())
            self.decisions["approved" if decision.approved else "refused"] += 1
            return CommandResult(command_id=msg.client_order_id, ok=True,
                                 result={"approved": decision.approved, "reason_code": decision.reason_code, "text": decision.text})
        if isinstance(msg, CancelRequest):
            return CommandResult(command_id=msg.client_order_id, ok=True, result={"approved": True, "reason_code": "", "text": ""})
        if not isinstance(msg, Command):
            return CommandResult(command_id="-", ok=False, error=f"{type(msg).__name__} is not served here", reason_code=UNSUPPORTED_REQUEST)
        if msg.name in OPERATOR_COMMANDS:
            who = str(msg.args.get("who") or msg.who or "operator")
            why = str(msg.args.get("why") or msg.args.get("reason") or "")  # the dashboard sends "reason"
            change = guard.command(msg.name, who, why, time.time_ns())
            level = AlertLevel.INFO if change.state is TradingState.ACTIVE else AlertLevel.CRITICAL
            self._apply_change(change, level, f"trading_{msg.name}")
            return CommandResult(command_id=msg.command_id, ok=True, result=self._status())
        if msg.name == "status":
            return CommandResult(command_id=msg.command_id, ok=True, result=self._status())
        return CommandResult(command_id=msg.command_id, ok=False, reason_code=UNKNOWN_COMMAND,
                             error=f"unknown command {msg.name!r}; known: halt, reduce, resume, status")

    def _status(self) -> dict:
        assert self.guard is not None
        return {**self.guard.status(), "decisions": dict(self.decisions)}

    # --- state changes -----------------------------------------------------------

    def _apply_change(self, change: StateChange, level: AlertLevel, kind: str) -> None:
        assert self.journal is not None
        self.journal.record(change)
        self.alert(level, kind, f"trading state {change.state.value} by {change.who}: {change.reason}")
        self._publish_state()

    def _publish_state(self, force: bool = False) -> None:
        guard = self.guard
        assert guard is not None
        key = (guard.state.value, guard.reason)
        if not force and key == self._published:
            return
        self._published = key
        self._next_state = time.monotonic() + STATE_EVERY_S
        self.publish(RISK_STATE_TOPIC, RiskState(
            state=guard.state.value, reason=guard.reason, who=guard.operator.who if guard.consistent else "startup",
            ts_ns=time.time_ns(), consistent=guard.consistent, usage=guard.usage(),
        ))

    def heartbeat_info(self) -> dict[str, object]:
        assert self.guard is not None
        return {"trading_state": self.guard.state.value, "consistent": self.guard.consistent, **self.decisions}
