"""The order-manager process: the only gateway for orders between the agents and the broker.

Binds ROUTER on ``order_manager_rpc`` and serves:

* ``OrderRequest`` -> ``OrderEvent`` (ACCEPTED, or REJECTED with a reason code);
* ``CancelRequest`` -> ``OrderEvent`` (cancels skip risk);
* ``Command``: ``sync`` {agent_id} (the agent's ledger opening, and its orders,
  fills and adjustments since), ``cancel_all`` {agent_id?}, ``orders``
  {agent_id?, open?, date?, since?, until?} (journal and archive alike),
  ``positions`` (the ledger's books now), ``journal_state`` (openings, and the
  orders, fills and books since: what the risk guard and reconciler start
  from), ``ledger_day`` {date}, ``ledger_adjust`` {agent_id, code, qty,
  cash_won, cost_won?, reason, adjustment_id?}, ``apply_missing_fill``
  {a Fill}, ``resolve_order`` {client_order_id}, ``status``, and ``fault``
  {kind: "journal_full", writes: N} | {kind: "clear"} (the next N journal writes
  fail as on a full disk; for the durability and chaos tests).

It follows the broker's execution notices (``exec.*`` on the broker feed) and
the session (``md.session`` on the bus, and the broker's clock on each ping),
keeps the broker connection with ``services.broker.connection.ConnectionMonitor``
(CONNECTED -> DISCONNECTED -> RECONNECTING -> RECONCILING -> CONNECTED, backoff
with jitter, no attempt limit; a broker whose feed and pings fall silent counts
as disconnected), and refuses new orders with BROKER_DISCONNECTED unless
CONNECTED. Each change of connection state is an Alert ``broker_connection``
and the ``connection`` key of the heartbeat. Orders and cancels left without an
answer are asked about by client order id (``OrderDesk.chase_in_flight``).
Start-up is the recovery path: replay the journal, open the ledger on the
market's date (rolling every date missed while the stack was down), reconcile
with the broker, then accept orders. At the close it expires what is open,
rolls the ledger into the next trading date and archives days older than the
retention (``services.order_manager.bookkeeper``); a ledger that does not add
up halts the firm (alert ``ledger_inconsistent``). Everything it publishes (order events, fills, alerts) leaves
in order right after the reply to the request that caused it, so the agent's
acknowledgement never waits for the bus. ``TRADER_OMS_FAULT_POINT`` arms a crash point for the
durability tests (``services.order_manager.faults``). A journal write that
fails (a full disk) stops new orders with JOURNAL_UNAVAILABLE and an alert
``journal_unavailable``; a probe write each second brings them back after a
catch-up with the broker (alert ``journal_recovered``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.settings import check_roster
from bus.codec import EncodeError
from bus.latency import Histogram
from bus.pubsub import Subscriber
from bus.rpc import RequestInfo, RpcClient, RpcFailure, RpcServer
from bus.service import Service
from core.config import PROJECT_ROOT, StackSettings
from core.instruments import load_instruments
from core.ledger import LedgerError
from core.messages import (
    AlertLevel,
    CancelRequest,
    Command,
    CommandResult,
    Fill,
    LedgerAdjustment,
    Message,
    OrderRequest,
    SessionEvent,
    SessionPhase,
    market_closed,
)
from services.broker.base import BrokerError, BrokerUnavailable, ConnectionState
from services.broker.connection import ALERT_KIND, ConnectionLost, ConnectionMonitor, ReconnectHooks, broker_backoff
from services.broker.connection import Transition
from services.broker.venue import VenueBroker
from services.order_manager.desk import DeskReason, DeskRefusal, JournalUnavailable, OrderDesk, RiskAnswer
from services.order_manager.faults import FaultPoints
from services.order_manager.bookkeeper import AdjustmentRefused, Bookkeeper, BookStart
from services.order_manager.journal import JOURNAL_FILE, Journal, trading_date_of

UNKNOWN_COMMAND = "UNKNOWN_COMMAND"
UNSUPPORTED_REQUEST = "UNSUPPORTED_REQUEST"
BAD_ARGS = "BAD_ARGS"
PING_INTERVAL_S = 1.0
CHASE_INTERVAL_S = 0.5
IN_FLIGHT_AGE_NS = 2_000_000_000  # an order or cancel without an answer this long is asked about by id
DAY_ROLL_GRACE_S = 1.0  # closing-auction notices follow the closed event; let them land first
ROLL_RETRY_S = 2.0  # a roll the broker or the journal could not take is tried again this much later
JOURNAL_PROBE_INTERVAL_S = 1.0  # how often a journal that refused a write is tried again
BAD_FAULT = "BAD_FAULT"
LEDGER_ALERT = "ledger_inconsistent"
ADJUSTMENT_REFUSED = "ADJUSTMENT_REFUSED"


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        return default


class OrderManagerService(Service):
    """Journals, risk-checks, sends and tracks every order; publishes ``oms.event.<agent_id>``."""

    service_name = "order-manager"
    timer_interval_s = 0.25  # pings, in-flight chases and journal probes run at 0.5-1 s
    heartbeat_volatile = ("connection_detail",)  # its seconds of silence; the state is ``connection``

    def __init__(self, name: str, settings: StackSettings) -> None:
        super().__init__(name, settings)
        self.risk_timeout_ms = int(_env_float("TRADER_OMS_RISK_TIMEOUT_MS", 300))
        md = settings.market_data
        self.monitor = ConnectionMonitor(
            ReconnectHooks(connect=self._ping_broker, resubscribe=self._resubscribe, reconcile=self._reconcile),
            silence_limit_s=md.silence_heartbeats * md.feed_heartbeat_s, backoff=broker_backoff(md.backoff_max_s),
            start_grace_s=md.venue_start_grace_s)
        self._next_ping = 0.0
        self._next_chase = 0.0
        self._next_journal_probe = 0.0
        self._roll_due: float | None = None
        self._rolled_date = ""
        self._roll_date = ""
        self._roll_waits = 0  # failed tries of the pending roll (the first is logged as a warning)
        self._ledger_seen_date = ""
        self._outbox: list[tuple[str, Message]] = []  # published once the current request is answered
        # µs, for a new order: waiting to be read (the agent's send to here), served (read to answered),
        # and of that, waiting for the risk guard's decision
        self.latency = {"wait_us": Histogram(), "serve_us": Histogram(), "risk_wait_us": Histogram()}

    # --- start and stop ------------------------------------------------------

    def setup(self) -> None:
        assert self.ctx is not None
        s = self.settings
        instruments = load_instruments(_project_path(s.market.instruments_file))
        roster = check_roster(_project_path(s.roster_file), instruments, s)
        for problem in roster.problems:
            self.log.warning("roster: %s", problem)
        faults = FaultPoints.from_env()
        if faults.point:
            self.log.warning("fault point armed: %s on hit %d", faults.point, faults.on_hit)
        self.journal = Journal(s.run_path / JOURNAL_FILE)
        starts = {a.id: BookStart(a.cash, {a.all_codes[0]: (a.start_qty, a.start_avg_price)} if a.start_qty else {})
                  for a in roster.valid_agents}
        self.books = Bookkeeper(self.journal, s.run_path, starts, s.broker.account_cash_won, set(instruments),
                                s.retention.retention_days)
        self.broker = VenueBroker(self.ctx, s, timeout_ms=min(s.bus.rpc_timeout_ms, 500), retries=1, sender=self.name)
        self.risk_client = RpcClient(self.ctx, s.endpoint("risk_guard_rpc"), timeout_ms=self.risk_timeout_ms,
                                     retries=0, sender=self.name)
        self.desk = OrderDesk(self.journal, self.broker, self._ask_risk, self.publish, self._alert,
                              agents=[a.id for a in roster.valid_agents], instruments=instruments, faults=faults)
        replayed = self.desk.rebuild()
        self.log.info("journal replayed: %d record(s), %d order(s), %d open", replayed, len(self.desk.book.orders),
                      len(self.desk.book.open_orders()))
        self.notices = self.broker.subscribe_notices()
        self.add_socket(self.notices.socket, self._on_notices)
        self.session_sub = Subscriber(self.ctx, s.endpoint("bus_out"), ["md.session"], rcvhwm=s.bus.rcvhwm,
                                      linger_ms=s.bus.linger_ms, heartbeats_from=["market-data"])
        self.add_socket(self.session_sub.socket, self._on_session)
        self.rpc = RpcServer(self.ctx, s.endpoint("order_manager_rpc"), self.handle_request, name=self.name)
        self.add_socket(self.rpc.socket, self._on_requests)
        self._drive_connection(time.monotonic())  # recovery before the first new order: reconcile, then accept
        self.flush_outbox()

    def teardown(self) -> None:
        self.flush_outbox()
        self.broker.close()
        self.risk_client.close()
        self.journal.close()

    def heartbeat_info(self) -> dict[str, object]:
        d = self.desk
        return {"connection": self.monitor.state.value, "connection_detail": self.monitor.info(time.monotonic()),
                "accepting": d.accepting, "journal_ok": d.journal_ok, "trading_date": d.trading_date,
                "phase": d.phase.value if d.phase else "", "orders": len(d.book.orders),
                "open_orders": len(d.book.open_orders()), "held_notices": len(d.book.held),
                "illegal_transitions": d.book.illegal_total, "journal_commits": self.journal.commits,
                "ledger_date": self.books.open_date, "ledger_problem": self.books.problem,
                "counters": dict(d.counters),
                "latency": {**{k: h.counts() for k, h in self.latency.items()},
                            "venue_us": self.broker.place_latency.counts()}}

    def heartbeat_idle(self) -> bool:
        """The market closed (or not yet open) and no order open: every agent hears this heartbeat."""
        d = self.desk
        return market_closed(d.phase) and not d.book.open_orders()

    # --- publishing ------------------------------------------------------------

    def publish(self, topic: str, msg: Message) -> int:
        """Queue a message for the bus, sent in order by ``flush_outbox``; returns how many are waiting.

        Every callback of the loop ends with a flush, and a request's flush
        follows its reply, so the acknowledgement of an order does not wait for
        its events to be published.
        """
        self._outbox.append((topic, msg))
        return len(self._outbox)

    def flush_outbox(self) -> None:
        """Publish what is queued, oldest first."""
        if not self._outbox:
            return
        out, self._outbox = self._outbox, []
        send = super().publish
        for topic, msg in out:
            try:
                send(topic, msg)
            except EncodeError as exc:  # a name from a request that cannot be a topic: never fatal
                self.log.error("not published on %r: %s", topic, exc)

    def _on_requests(self) -> None:
        """Answer the waiting requests one by one, publishing what each caused once its reply is sent."""
        handle = self.rpc.handle_ready
        while handle(1):
            self.flush_outbox()

    # --- broker connection ---------------------------------------------------

    def _drive_connection(self, now: float) -> None:
        """Advance the connection state machine; publish each change; accept orders only when CONNECTED."""
        self._announce(self.monitor.poll(now))

    def _lost(self, now: float, why: str) -> None:
        self._announce(self.monitor.lost(now, why))

    def _announce(self, transitions: list[Transition]) -> None:
        self.desk.accepting = self.monitor.connected
        for t in transitions:
            if t.starting:  # the venue is still starting: its first attempts are no news
                self.log.debug("%s while the venue starts: %s", ALERT_KIND, t.text)
            else:
                level = AlertLevel.INFO if t.to_state is ConnectionState.CONNECTED else AlertLevel.WARNING
                self.alert(level, ALERT_KIND, t.text)
            if t.to_state is ConnectionState.CONNECTED:
                self._next_ping = t.ts + PING_INTERVAL_S

    def _ping_broker(self) -> str | None:
        """Reconnect step: a ping answered means the broker is back (and tells the session)."""
        try:
            self._follow_clock(self.broker.ping())
        except (BrokerUnavailable, BrokerError) as exc:
            return f"ping: {exc}"
        self.monitor.heard(time.monotonic())
        return None

    def _resubscribe(self) -> str | None:
        """Reconnect step: a fresh subscription to the execution notices (what was missed, reconcile finds)."""
        self.remove_socket(self.notices.socket)
        self.notices.close()
        if self.notices.socket in self._sockets:
            self._sockets.remove(self.notices.socket)
        self.notices = self.broker.subscribe_notices()
        self.add_socket(self.notices.socket, self._on_notices)
        return None

    def _reconcile(self) -> str | None:
        """Reconnect step: the journal against the broker's orders and fills of the day, then stale orders expire."""
        try:
            summary = self.desk.reconcile(time.time_ns())
            stale = self.desk.stale_open_orders()
            if stale:
                # their day closed while the order manager was away: its executions first, then what is left expires
                for day in sorted({trading_date_of(o.client_order_id, self.desk.trading_date) for o in stale}):
                    self.log.info("catching up on %s: %s", day, self.desk.reconcile(time.time_ns(), trading_date=day))
                self.log.info("%d open order(s) of an earlier day expire", len(self.desk.stale_open_orders()))
                self.desk.expire_open(time.time_ns(), through_date=max(
                    trading_date_of(o.client_order_id, self.desk.trading_date) for o in stale))
        except BrokerUnavailable as exc:
            raise ConnectionLost(str(exc)) from exc
        except BrokerError as exc:
            return f"the broker refused a reconciliation query: {exc}"
        except JournalUnavailable as exc:
            return exc.text
        self.log.info("reconciled with the broker: %s", summary)
        return None

    def _follow_clock(self, ping: dict[str, Any]) -> None:
        session, date = str(ping.get("session", "")), str(ping.get("trading_date", ""))
        try:
            phase = SessionPhase(session) if session else None
        except ValueError:
            phase = None
        if phase is not None:
            self._on_phase(phase, date)

    def _on_phase(self, phase: SessionPhase, trading_date: str) -> None:
        if (trading_date and self._roll_due is not None and self._roll_date
                and self._roll_date < trading_date):
            # the market is on the next day before the closed one was rolled: roll it first, with its own records
            if not self._day_roll():
                return  # the new day is taken in once the closed one is rolled
        self.desk.on_session(phase, trading_date)
        if trading_date and trading_date != self._ledger_seen_date:
            if self._keep_books(lambda: self.books.open_day(trading_date, time.time_ns())) is not None:
                self._ledger_seen_date = trading_date
        if phase is SessionPhase.CLOSED and self._rolled_date != trading_date and self._roll_due is None:
            self._roll_due = time.monotonic() + DAY_ROLL_GRACE_S
            self._roll_date = trading_date  # the date that closed: the market may be on the next one by the roll

    def on_timer(self, now_monotonic: float) -> None:
        try:
            self._on_timer(now_monotonic)
        finally:
            self.flush_outbox()

    def _on_timer(self, now_monotonic: float) -> None:
        if self.monitor.connected and not self.desk.accepting:
            self._lost(now_monotonic, "a request to the broker got no answer")
        self._drive_connection(now_monotonic)
        if not self.monitor.connected:
            return
        try:
            if now_monotonic >= self._next_ping:
                self._next_ping = now_monotonic + PING_INTERVAL_S
                self._follow_clock(self.broker.ping())
                self.monitor.heard(time.monotonic())
            if not self.desk.journal_ok and now_monotonic >= self._next_journal_probe:
                self._next_journal_probe = now_monotonic + JOURNAL_PROBE_INTERVAL_S
                self.desk.recover_journal(time.time_ns())
            if now_monotonic >= self._next_chase:
                self._next_chase = now_monotonic + CHASE_INTERVAL_S
                self.desk.chase_in_flight(time.time_ns(), IN_FLIGHT_AGE_NS)
            if self._roll_due is not None and now_monotonic >= self._roll_due:
                self._day_roll()
        except BrokerUnavailable as exc:
            self._lost(now_monotonic, str(exc))
        except BrokerError as exc:
            # a query refused (KIS did not answer the gateway): the reconnect's reconciliation catches up once it can
            self._lost(now_monotonic, f"the broker refused a query: {exc}")
        except JournalUnavailable as exc:
            self.log.warning("journal: %s", exc.text)

    def _day_roll(self) -> bool:
        """At the close: apply the last notices from the broker, expire what is open, purge old days.

        Whether it rolled. A broker that does not answer or refuses the day's
        records (KIS without a token for a minute), or a journal that refuses
        the write, leaves the day open and the roll tried again shortly: an
        order expires only after the broker's last word on it.
        """
        self._roll_due = None
        date = self._roll_date or self.desk.trading_date
        try:
            self.desk.reconcile(time.time_ns(), trading_date=date)  # the closed day's, even if the broker moved on
            expired = self.desk.expire_open(time.time_ns(), through_date=date)
        except (BrokerUnavailable, BrokerError, JournalUnavailable) as exc:
            self._roll_due = time.monotonic() + ROLL_RETRY_S
            text = exc.text if isinstance(exc, JournalUnavailable) else str(exc)
            self._roll_waits += 1
            self.log.log(logging.WARNING if self._roll_waits == 1 else logging.DEBUG,
                         "the roll of %s waits (tried again every %.0f s): %s", date, ROLL_RETRY_S, text)
            if isinstance(exc, BrokerUnavailable):
                self._lost(time.monotonic(), str(exc))
            return False
        self._roll_waits = 0
        self._rolled_date = date
        rolled = self._keep_books(lambda: self.books.close_day(date, time.time_ns()))
        self.log.info("day roll %s: %d order(s) expired; ledger %s", date, expired, rolled)
        return True

    def _keep_books(self, step: Callable[[], Any]) -> Any:
        """Run a ledger step; a ledger that does not add up halts the firm and alerts once, naming the row."""
        try:
            return step()
        except LedgerError as exc:
            text = str(exc)
            if text != self.books.problem:
                self.books.problem = text
                self.log.error("ledger: %s", text)
                self.alert(AlertLevel.CRITICAL, LEDGER_ALERT, f"the ledger does not add up ({text}); trading is halted "
                           "until an operator looks at it")
                self._halt(f"ledger: {text}")
            return None

    def _halt(self, why: str) -> None:
        try:
            self.risk_client.call(Command(command_id=f"{self.name}-halt-{time.time_ns()}", name="halt",
                                          args={"who": "ledger", "why": why[:500]}, who=self.name))
        except RpcFailure as exc:
            self.risk_client.close()
            self.alert(AlertLevel.CRITICAL, "ledger_halt_failed", f"could not halt trading: {exc}")

    # --- feeds -------------------------------------------------------------------

    def _on_notices(self) -> None:
        now = time.time_ns()
        self.monitor.heard(time.monotonic())  # any frame from the feed, its heartbeats included
        try:
            for env in self.notices.drain(1000):
                try:
                    self.desk.on_notice(env.msg, now)
                except JournalUnavailable as exc:
                    # not applied; the catch-up after the journal recovers asks the broker for it
                    self.log.warning("notice %s not journaled: %s", type(env.msg).__name__, exc.text)
        finally:
            self.flush_outbox()

    def _on_session(self) -> None:
        for env in self.session_sub.drain(100):
            if isinstance(env.msg, SessionEvent):
                self._on_phase(env.msg.phase, env.msg.trading_date)
        self.flush_outbox()

    # --- requests ------------------------------------------------------------------

    def _ask_risk(self, req: OrderRequest) -> Callable[[], RiskAnswer]:
        """Send the order to the risk guard; the function returned waits for its decision.

        Silence or a garbled answer refuses the order (fail closed).
        """
        try:
            wait = self.risk_client.start(req, idempotency_key=f"risk:{req.client_order_id}")
        except RpcFailure as exc:
            self.risk_client.close()
            refused = RiskAnswer(False, DeskReason.RISK_UNAVAILABLE, f"the risk guard did not answer: {exc}")
            return lambda: refused

        def answer() -> RiskAnswer:
            started = time.perf_counter_ns()
            try:
                reply = wait()
            except RpcFailure as exc:
                self.risk_client.close()
                return RiskAnswer(False, DeskReason.RISK_UNAVAILABLE, f"the risk guard did not answer: {exc}")
            finally:
                self.latency["risk_wait_us"].add((time.perf_counter_ns() - started) / 1000)
            result = reply.result if isinstance(reply, CommandResult) and reply.ok else None
            if not isinstance(result, dict) or not isinstance(result.get("approved"), bool):
                return RiskAnswer(False, DeskReason.RISK_UNAVAILABLE,
                                  f"the risk guard answered {type(reply).__name__} without a decision")
            return RiskAnswer(result["approved"], str(result.get("reason_code", "")), str(result.get("text", "")))

        return answer

    def _alert(self, level: AlertLevel, kind: str, text: str) -> None:
        self.alert(level, kind, text)

    def handle_request(self, msg: Message, info: RequestInfo) -> Message:
        now = time.time_ns()
        try:
            if isinstance(msg, OrderRequest):
                if info.sent_ns:
                    self.latency["wait_us"].add(max(0, info.received_ns - info.sent_ns) / 1000)
                try:
                    return self.desk.place(msg, now)
                finally:
                    self.latency["serve_us"].add((time.time_ns() - now) / 1000)
            if isinstance(msg, CancelRequest):
                return self.desk.cancel(msg, now)
            if isinstance(msg, Command):
                return self._command(msg, now)
        except DeskRefusal as exc:
            return CommandResult(command_id=getattr(msg, "command_id", "-"), ok=False, error=exc.text,
                                 reason_code=exc.reason_code)
        except BrokerUnavailable as exc:
            self._lost(time.monotonic(), str(exc))
            return CommandResult(command_id=getattr(msg, "command_id", "-"), ok=False, error=str(exc),
                                 reason_code=DeskReason.BROKER_DISCONNECTED)
        return CommandResult(command_id="-", ok=False, reason_code=UNSUPPORTED_REQUEST,
                             error=f"the order manager does not serve {type(msg).__name__} requests")

    def _command(self, cmd: Command, now: int) -> CommandResult:
        name, args, desk = cmd.name, cmd.args, self.desk

        def ok(result: Any) -> CommandResult:
            return CommandResult(command_id=cmd.command_id, ok=True, result=result)

        def bad(text: str) -> CommandResult:
            return CommandResult(command_id=cmd.command_id, ok=False, reason_code=BAD_ARGS, error=text)

        if name == "sync":
            agent_id, since = args.get("agent_id"), args.get("since", "")
            if not isinstance(agent_id, str) or not agent_id or not isinstance(since, str) or not (since == "" or (len(since) == 8 and since.isdigit())):
                return bad("sync needs args {agent_id: str, since?: YYYYMMDD}")
            return ok(self.books.sync(agent_id))
        if name == "cancel_all":
            agent_id = args.get("agent_id")
            if agent_id is not None and not isinstance(agent_id, str):
                return bad("cancel_all takes args {agent_id?: str}")
            events = desk.cancel_all(agent_id, now)
            return ok([e.model_dump(mode="json") for e in events])
        if name == "orders":
            agent_id, date, since, until = (args.get(k) for k in ("agent_id", "date", "since", "until"))
            dates = [d for d in (date, since, until) if d is not None]
            if (agent_id is not None and not isinstance(agent_id, str)) or not all(_is_date(d) for d in dates):
                return bad("orders takes args {agent_id?: str, open?: bool, date?: YYYYMMDD, since?: YYYYMMDD, "
                           "until?: YYYYMMDD}")
            if date is not None:
                since = until = date
            since = since if since is not None else desk.trading_date
            until = until if until is not None else "99999999"
            return ok(self.books.orders(agent_id=agent_id, since=since, until=until, open_only=bool(args.get("open"))))
        if name == "positions":
            return ok(self.books.positions())
        if name == "journal_state":
            return ok(self.books.journal_state(desk.trading_date))
        if name == "ledger_day":
            date = args.get("date")
            if not _is_date(date):
                return bad("ledger_day needs args {date: YYYYMMDD}")
            return ok(self.books.day(date))
        if name == "ledger_adjust":
            return self._adjust(cmd, now)
        if name == "apply_missing_fill":
            try:
                fill = Fill.model_validate(args)
            except ValueError as exc:
                return bad(f"apply_missing_fill needs a Fill: {exc}")
            if desk.book.get(fill.client_order_id) is None:
                return CommandResult(command_id=cmd.command_id, ok=False, reason_code=DeskReason.UNKNOWN_ORDER,
                                     error=f"no order {fill.client_order_id!r}")
            out = desk.apply_fill(fill, now)
            return ok({"applied": bool(out.fills), "duplicate": out.duplicate, "held": out.held,
                       "refused": out.refused, "text": out.refused_text})
        if name == "resolve_order":
            coid = args.get("client_order_id")
            if not isinstance(coid, str) or not coid:
                return bad("resolve_order needs args {client_order_id: str}")
            changed = desk.resolve(coid, now)
            order = desk.book.get(coid)
            return ok({"changed": bool(changed), "status": order.status.value if order else ""})
        if name == "fault":
            return self._fault(cmd)
        if name in ("status", "ping"):
            return ok(self.heartbeat_info())
        return CommandResult(command_id=cmd.command_id, ok=False, reason_code=UNKNOWN_COMMAND,
                             error=f"unknown command {name!r}: sync, cancel_all, orders, positions, journal_state, "
                                   "ledger_day, ledger_adjust, apply_missing_fill, resolve_order, fault, status")

    def _adjust(self, cmd: Command, now: int) -> CommandResult:
        """Book an adjustment, publish it to the agent's book (and the risk guard), and alert."""
        try:
            booked = self.books.adjust({**cmd.args, "who": cmd.args.get("who") or cmd.who or "operator"}, now)
        except AdjustmentRefused as exc:
            return CommandResult(command_id=cmd.command_id, ok=False, reason_code=ADJUSTMENT_REFUSED, error=str(exc))
        if not booked["duplicate"]:
            agent_id = booked["agent_id"]
            self.log.warning("adjustment %s booked: %s", booked["adjustment_id"], booked)
            self.alert(AlertLevel.WARNING, "ledger_adjustment",
                       f"adjustment {booked['adjustment_id']} by {booked['who']}: {agent_id} {booked['code']} "
                       f"{booked['qty']:+,} shares, {booked['cash_won']:+,} won ({booked['reason']})")
            self.publish(f"oms.event.{agent_id}", LedgerAdjustment(
                adjustment_id=booked["adjustment_id"], agent_id=agent_id, code=booked["code"], qty=booked["qty"],
                cash_won=booked["cash_won"], cost_won=booked["cost_won"], reason=booked["reason"], who=booked["who"],
                ts_ns=now))
        return CommandResult(command_id=cmd.command_id, ok=True, result=booked)

    def _fault(self, cmd: Command) -> CommandResult:
        """Inject a journal failure: ``{kind: "journal_full", writes: N}`` or ``{kind: "clear"}``."""
        kind, writes = cmd.args.get("kind"), cmd.args.get("writes", 1)
        if kind == "clear":
            writes = 0
        elif kind != "journal_full" or isinstance(writes, bool) or not isinstance(writes, int) or not 0 <= writes <= 1000:
            return CommandResult(command_id=cmd.command_id, ok=False, reason_code=BAD_FAULT,
                                 error="fault takes {kind: 'journal_full', writes: 0..1000} or {kind: 'clear'}")
        self.journal.fail_next_writes(writes)
        self.log.warning("fault injected: the next %d journal write(s) fail as on a full disk", writes)
        return CommandResult(command_id=cmd.command_id, ok=True, result={"failing_writes": writes})


def _is_date(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 8 and value.isdigit()


def _project_path(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else PROJECT_ROOT / p
