"""The agent process: one strategy, one book, one PnL (``python -m agents.runtime --id ID``).

The imperative shell around ``AgentContext`` (the same context the back-tester
drives). In order, it:

1. takes its pid lock ``<run_dir>/run/<id>.pid`` (a second copy refuses to start,
   names the holder's pid and exits with code 3);
2. subscribes to its codes' market data (``md.tick/bar.1m/flow/fund.<code>``,
   ``md.session``), its own ``oms.event.<id>`` and ``sys.command.<id>`` BEFORE
   asking for anything, so nothing published after the snapshots is missed;
3. syncs: asks the order manager for its book of record (Command ``sync``:
   the ledger's opening of the day, and its orders, fills and adjustments
   since) and rebuilds its book with ``Portfolio.rebuild``; until that succeeds it
   keeps the book it has, retries with backoff and jitter and hands the
   strategy nothing (trading starts only in sync);
4. asks market data for a snapshot (Clone pattern: late joiner) for the
   session, base prices, last prices and the bars it keeps; the context then
   gives the strategy back its saved state
   (``<run_dir>/agents/<id>/strategy_state.msgpack``, see
   ``agents.state_store``), warms its bar windows with those bars (and with any
   heard on the bus before the sync), replays to it, trading refused, the bars
   newer than its state, and only then calls its ``on_start``;
5. runs the loop: market data and order events into the context, the
   context's outbox to the order manager over RPC (client order ids
   ``<id>-<YYYYMMDD>-<n>``, ``n`` continuing after every number the sync
   reported), alerts to ``sys.alert``, its status to its heartbeat and to its
   status page on ``127.0.0.1:<dp>``.

The agent trades within the limits the risk guard applies to it, read from the
same risk file (``settings.risk_file``, see ``agents.limits``). A refused order
is a signal, not a retry: the context remembers it with a backoff by its
reason code and tells the strategy (``on_refused``); a storm of refusals of one
reason is raised once on ``sys.alert``. A refusal that comes as an RPC error
instead of an order event goes the same way.

No call waits forever: every RPC has a timeout and bounded retries. An order or
cancel whose answer does not come puts the agent out of sync: it stops
trading and resyncs; the rebuilt book says whether the order reached the order
manager. An order is never sent again, under its own or a new id.

The strategy's state is saved at ``closed``, on a graceful stop, before any
order goes out (write-ahead: after a kill -9 the state never lacks a step that
reached the order manager) and once a minute of market time, at most once a
wall second (the state changes with market events, and a faster clock must not
turn saves into a write per bar; a save is only a bound on how many bars the
warm-up replays). Nothing is saved before the saved state has been given back.

At ``closing`` the context cancels what is open; at ``closed`` the agent writes
its day to ``<run_dir>/agents/<id>/<YYYYMMDD>.json``. On SIGTERM or Command
``stop`` on ``sys.command.<id>`` it cancels its open orders and writes
``<run_dir>/agents/<id>/state.json``. A strategy that raises is contained by
the context; after ``max_consecutive_errors`` in a row it stops trading and
the agent raises an Alert.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from time import time_ns
from typing import Any

from agents import state_store, warm
from agents.context import AgentContext, CancelIntent, OrderIntent
from agents.limits import agent_limits
from agents.settings import AgentSettings
from agents.status_page import StatusPage
from agents.strategy import BarData, FillData, FlowData, FundData, OrderEventData, TickData, get_strategy
from bus.codec import Envelope
from bus.latency import Histogram
from bus.pubsub import Subscriber
from bus.rpc import RpcClient, RpcFailure
from bus.service import EXIT_CONFIG, Service, configure_logging
from core.config import ConfigError, StackSettings, load_stack
from core.instruments import Instrument, InstrumentError
from core.ledger import Book, LedgerError
from core.messages import Bar, Command, CommandResult, Fill, Fundamentals, Message, OrderEvent, SessionPhase, market_closed
from core.portfolio import Portfolio, kst_date
from core.risk_limits import AgentLimits

# Sync states shown on the status page and in heartbeats.
SYNC_WAITING = "waiting"  # never synced yet: the strategy has not started
SYNC_IN_SYNC = "in_sync"
SYNC_RESYNCING = "resyncing"  # lost sync (an unanswered order, a gap in its events): not trading

EARLIEST_DATE = "19700101"  # the sync starts from the ledger's opening, whatever the date asked
SYNC_BACKOFF_FIRST_S = 0.2
SYNC_BACKOFF_MAX_S = 5.0
STATUS_REFRESH_S = 0.25
AGENT_RCVHWM = 10_000  # messages queued for an agent that is busy, at most
STATUS_IDLE_REFRESH_S = 1.0  # with nothing heard or done since the last refresh, the status page is rebuilt this often
STRATEGY_TIMER_S = 1.0
BUSY_TIMER_S = 0.25
IDLE_TIMER_S = 1.0  # nothing heard or done since the last round: the next round comes this much later
# Who publishes what an agent listens to (md.*, oms.event.<id>, sys.command.<id>): only their heartbeats matter here.
TOPIC_PUBLISHERS = ("market-data", "order-manager", "supervisor")
BATCH = 2000  # bus messages taken per wake-up before orders and alerts are flushed
NS_PER_MIN = 60_000_000_000
STATE_SAVE_MIN_INTERVAL_S = 5.0  # the minute's save of the strategy state waits at least this long after the last
MAX_REPLY_ROUNDS = 100  # rounds of intents a strategy makes in reply to refusals within one flush, as the back-tester's

log = logging.getLogger("agents.runtime")


class AgentRuntime(Service):
    """The live shell of one agent: bus in, context, RPC out, status page."""

    timer_interval_s = BUSY_TIMER_S  # IDLE_TIMER_S once a whole round was quiet (see on_timer)

    def __init__(self, agent: AgentSettings, settings: StackSettings, instruments: dict[str, Instrument],
                 limits: AgentLimits | None = None) -> None:
        """``limits``: the agent's risk limits (default: read from the stack's risk file; ConfigError if it is broken)."""
        super().__init__(agent.id, settings)
        self.agent = agent
        self.codes = agent.all_codes
        self.markets = {c: instruments[c].market for c in self.codes if c in instruments}
        self.instruments = instruments
        strategy = get_strategy(agent.strategy).from_params(agent.params)
        if limits is None:
            limits = agent_limits(agent.id, _project_path(settings.risk_file))
        self._agent_ctx = AgentContext(agent.id, self.codes, strategy, self._fresh_book(), instruments, limits=limits)
        self.state_path = state_store.state_path(settings.run_path, agent.id)
        self._state_minute = -1  # market minute of the last save of the strategy state
        self._state_saved_at = 0.0  # monotonic time of that save
        self._refused_state_kept = False
        self.sync_state = SYNC_WAITING
        self.sync_attempts = 0
        self.sync_error = ""
        self.last_sync_ns = 0
        self.last_seq_reported = 0
        self.synced_orders = 0
        self.synced_fills = 0
        self._next_sync_at = 0.0
        self._sync_backoff = SYNC_BACKOFF_FIRST_S
        self._started = False
        self._max_n_by_date: dict[str, int] = {}
        self._order_status: dict[str, tuple[str, int]] = {}
        self._session_phase: SessionPhase | None = None
        self._session_date = ""
        self._clock_speed = 1.0
        self._market_ts = 0
        self._market_mono = 0.0
        self._next_status_at = 0.0
        self._idle_status_at = 0.0
        self._status_dirty = True  # something happened since the status page was last rebuilt
        self._next_strategy_timer_at = 0.0
        self._command_seq = 0
        self.tick_latency = Histogram()
        self.ack_latency = Histogram()
        self.counters = {
            "ticks": 0,
            "bars": 0,
            "flows": 0,
            "sessions": 0,
            "order_events": 0,
            "fills": 0,
            "fills_duplicate": 0,
            "orders_sent": 0,
            "orders_rejected": 0,
            "cancels_sent": 0,
            "cancels_rejected": 0,
            "rpc_failures": 0,
            "intents_dropped_out_of_sync": 0,
            "bus_gaps": 0,
            "alerts": 0,
            "days_written": 0,
            "state_saves": 0,
            "state_save_errors": 0,
            "bars_already_warmed": 0,
        }
        self.page: StatusPage | None = None
        self.sub: Subscriber | None = None
        self.oms: RpcClient | None = None
        self.market_data: RpcClient | None = None

    # --- set-up and tear-down ------------------------------------------------

    def _fresh_book(self) -> Portfolio:
        book = Portfolio(self.agent.cash, markets=self.markets)
        if self.agent.start_qty:
            book.set_start_holding(self.codes[0], self.agent.start_qty, self.agent.start_avg_price)
        return book

    def setup(self) -> None:
        """Status page, subscriptions, RPC clients, then the first sync and snapshot."""
        try:
            self.page = StatusPage(self.agent.dp, f"agent {self.agent.id}")
        except OSError as exc:
            raise RuntimeError(f"cannot serve the status page on 127.0.0.1:{self.agent.dp}: {exc.strerror}") from exc
        topics = ["md.session", f"oms.event.{self.agent.id}", f"sys.command.{self.agent.id}"]
        for code in self.codes:
            topics += [f"md.tick.{code}", f"md.bar.1m.{code}", f"md.flow.{code}", f"md.fund.{code}"]
        bus = self.settings.bus
        # A bounded queue keeps an agent that falls behind small; what it drops is seen as a gap
        # (a gap in its order events makes it re-sync its book from the order manager).
        self.sub = Subscriber(self.zmq_context, self.settings.endpoint("bus_out"), topics, rcvhwm=min(bus.rcvhwm, AGENT_RCVHWM), linger_ms=bus.linger_ms, on_gap=self._on_gap,
                              heartbeats_from=TOPIC_PUBLISHERS, on_restart=self._on_publisher_restart)
        self.add_socket(self.sub.socket, self._on_bus)
        self.oms = RpcClient(self.zmq_context, self.settings.endpoint("order_manager_rpc"), timeout_ms=bus.rpc_timeout_ms, retries=bus.rpc_retries, sender=self.name)
        self.market_data = RpcClient(self.zmq_context, self.settings.endpoint("market_data_rpc"), timeout_ms=bus.rpc_timeout_ms, retries=0, sender=self.name)
        self._refresh_status()
        saved, refused = state_store.read(self.state_path)
        self.context.resume(saved, refused=refused)  # given back when the first sync starts the strategy
        self._try_sync(time.monotonic())

    def teardown(self) -> None:
        """Graceful stop: cancel what is open, write the state file and the strategy's state, close the page."""
        try:
            if self.sync_state == SYNC_IN_SYNC and self.oms is not None:
                self.context.cancel_all()
                self._flush_outbox()
            self._write_book("state", "stop")
            self._save_strategy_state("stop")
        finally:
            for client in (self.oms, self.market_data):
                if client is not None:
                    client.close()
            if self.page is not None:
                self.page.close()

    # Service keeps the ZeroMQ context in ``self.ctx``; the agent's context is ``self.context``.
    @property
    def context(self) -> AgentContext:
        """The strategy's ``AgentContext``."""
        return self._agent_ctx

    @property
    def zmq_context(self) -> Any:
        """The process's ZeroMQ context (made by ``Service.run`` before ``setup``)."""
        if self.ctx is None:
            raise RuntimeError("the ZeroMQ context exists only inside run()")
        return self.ctx

    # --- sync ------------------------------------------------------------------

    def _command(self, name: str, args: dict[str, Any]) -> Command:
        self._command_seq += 1
        return Command(command_id=f"{self.name}-{os.getpid()}-{self._command_seq}", name=name, args=args, who=self.name, ts_ns=time.time_ns())

    def _try_sync(self, now: float) -> bool:
        """Rebuild the book from the order manager's record; on failure schedule a retry."""
        self.sync_attempts += 1
        assert self.oms is not None, "setup() makes the RPC clients"
        try:
            reply = self.oms.call(self._command("sync", {"agent_id": self.agent.id, "since": EARLIEST_DATE}))
            orders, fills, last_seq, opening, adjustments = _parse_sync(reply, self.agent.id)
            last_exec_id = reply.result.get("last_exec_id") if isinstance(reply.result, dict) else None
        except (RpcFailure, SyncError) as exc:
            self.counters["rpc_failures"] += isinstance(exc, RpcFailure)
            self.sync_error = str(exc)
            delay = self._sync_backoff * random.uniform(0.8, 1.2)
            self._sync_backoff = min(SYNC_BACKOFF_MAX_S, self._sync_backoff * 2)
            self._next_sync_at = now + delay
            self.log.warning("sync failed (%s); retrying in %.1f s", exc, delay)
            return False
        ctx = self.context
        book = Portfolio.rebuild(
            self.agent.cash,
            {self.codes[0]: (self.agent.start_qty, self.agent.start_avg_price)} if self.agent.start_qty else {},
            orders,
            fills,
            markets=self.markets,
            opening=opening,
            adjustments=adjustments,
        )
        book.marks.update(ctx.portfolio.marks)
        if isinstance(last_exec_id, str) and last_exec_id:
            book.last_exec_id = last_exec_id  # the journal's latest fill of this agent, of whatever day
        ctx.load_book(book)
        self._order_status = {o.client_order_id: (o.status.value, o.filled_qty) for o in orders}
        for o in orders:
            self._note_client_order_id(o.client_order_id)
        self.last_seq_reported = last_seq
        self.synced_orders, self.synced_fills = len(orders), len(fills)
        self.last_sync_ns = time.time_ns()
        self.sync_error = ""
        self._sync_backoff = SYNC_BACKOFF_FIRST_S
        first = not self._started
        if first:
            self._load_market_snapshot()
        if self._session_date:
            self._resume_order_seq(self._session_date)
        self.sync_state = SYNC_IN_SYNC
        self.log.info("in sync: %d order(s), %d fill(s), last n %d; cash %d won", len(orders), len(fills), last_seq, book.cash_won)
        if first:
            self._started = True
            ctx.start()
        if self._session_phase is not None and ctx.phase is not self._session_phase:
            ctx.on_session(self._session_phase, max(ctx.now(), self._market_ts), self._session_date)
        self._after_events()
        self._refresh_status()
        return True

    def _lose_sync(self, why: str) -> None:
        """Stop trading until a resync has rebuilt the book from the order manager."""
        if self.sync_state != SYNC_RESYNCING:
            self.log.warning("out of sync: %s", why)
        self.sync_state = SYNC_RESYNCING
        self.sync_error = why
        self._next_sync_at = time.monotonic()

    def _load_market_snapshot(self) -> None:
        """Session, base and last prices from market data (a late joiner's state request)."""
        assert self.market_data is not None, "setup() makes the RPC clients"
        try:
            reply = self.market_data.call(self._command("snapshot", {"codes": self.codes}))
        except RpcFailure as exc:
            self.log.info("no market-data snapshot (%s); waiting for the feed", exc)
            return
        if not isinstance(reply, CommandResult) or not reply.ok or not isinstance(reply.result, dict):
            self.log.warning("market-data snapshot refused: %s", getattr(reply, "error", type(reply).__name__))
            return
        session = reply.result.get("session")
        if isinstance(session, dict) and session.get("phase") in SessionPhase._value2member_map_:
            self._session_phase = SessionPhase(session["phase"])
            self._session_date = str(session.get("trading_date") or "")
            self._clock_speed = float(session.get("clock_speed") or 1.0)
            self._mark_market_time(int(session.get("ts_ns") or 0))
            self.context.trading_date = self._session_date
        for code, line in (reply.result.get("codes") or {}).items():
            if code not in self.codes or not isinstance(line, dict):
                continue
            if isinstance(line.get("base_price"), int):
                self.context.set_base_price(code, line["base_price"])
            if isinstance(line.get("last"), int) and line["last"] > 0:
                self.context.portfolio.mark(code, line["last"])
            if isinstance(line.get("bars"), list):
                self.context.queue_warm_up(self._snapshot_bars(code, line["bars"]))
            if isinstance(line.get("fundamentals"), dict):
                try:
                    f = Fundamentals.model_validate(line["fundamentals"])
                except ValueError as exc:
                    self.log.warning("market-data snapshot: malformed fundamentals of %s skipped: %s", code, exc)
                else:
                    if f.code == code:
                        self.context.set_fundamentals(FundData(f.code, f.ts_ns, f.effective_date, f.eps, f.bps, f.dps, f.source))

    def _snapshot_bars(self, code: str, rows: list[Any]) -> list[BarData]:
        """The snapshot's bars of a code, checked at the boundary; a malformed one is logged and skipped."""
        out = []
        for row in rows:
            try:
                b = Bar.model_validate(row)
            except ValueError as exc:
                self.log.warning("market-data snapshot: a malformed bar of %s skipped: %s", code, exc)
                continue
            if b.code == code:
                out.append(BarData(b.code, b.ts_ns, b.open, b.high, b.low, b.close, b.volume))
        return out

    def _note_client_order_id(self, client_order_id: str) -> None:
        head, _, n = client_order_id.rpartition("-")
        date = head.rpartition("-")[2]
        if n.isdigit() and len(date) == 8 and date.isdigit():
            self._max_n_by_date[date] = max(self._max_n_by_date.get(date, 0), int(n))

    def _resume_order_seq(self, trading_date: str) -> None:
        """Client order numbers of a day continue after every number ever used or reported."""
        floor = max(self._max_n_by_date.get(trading_date, 0), self.last_seq_reported)
        self.context.resume_order_seq(trading_date, floor)

    # --- the bus ----------------------------------------------------------------

    def _on_gap(self, sender: str, topic: str, first: int, last: int) -> None:
        self.counters["bus_gaps"] += 1
        if topic.startswith("oms.event."):
            # Missed order events or fills: only a sync can tell what they were.
            self._lose_sync(f"missed {last - first + 1} order event(s) from {sender}")

    def _on_publisher_restart(self, sender: str) -> None:
        if sender == "order-manager":
            # events the old order manager journaled but never published are only in a sync
            self._lose_sync("the order manager restarted")

    def _on_bus(self) -> None:
        assert self.sub is not None, "setup() subscribes"
        envs = self.sub.drain(BATCH)
        if not envs:
            return
        self._status_dirty = True
        in_sync = self.sync_state == SYNC_IN_SYNC
        ctx = self.context
        counters = self.counters
        for env in envs:
            kind = env.type
            msg: Any = env.msg
            if kind == "tick":
                counters["ticks"] += 1
                self.tick_latency.add((time_ns() - env.ts_ns) / 1000)  # the venue's publish to the strategy's on_tick
                if in_sync:
                    if not ctx.trading_date:
                        self._date_from_market(msg.ts_ns)
                    ctx.on_tick(TickData(msg.code, msg.ts_ns, msg.price, msg.qty))
                else:
                    ctx.portfolio.mark(msg.code, msg.price)
                self._market_ts, self._market_mono = msg.ts_ns, 0.0
            elif kind == "bar":
                counters["bars"] += 1
                if in_sync:
                    if msg.ts_ns <= ctx.warmed_through.get(msg.code, 0):
                        counters["bars_already_warmed"] += 1  # the snapshot's warm-up gave it already
                        continue
                    if not ctx.trading_date:
                        self._date_from_market(msg.ts_ns)
                    ctx.on_bar(BarData(msg.code, msg.ts_ns, msg.open, msg.high, msg.low, msg.close, msg.volume))
                else:
                    ctx.portfolio.mark(msg.code, msg.close)
                    if not self._started:  # the warm-up gives it to the strategy once the first sync starts it
                        ctx.queue_warm_up((BarData(msg.code, msg.ts_ns, msg.open, msg.high, msg.low, msg.close, msg.volume),))
            elif kind == "investor_flow":
                counters["flows"] += 1
                if in_sync:
                    ctx.on_flow(FlowData(msg.code, msg.ts_ns, msg.foreign_net_qty, msg.institution_net_qty, msg.individual_net_qty,
                                         msg.provisional, msg.cumulative))
            elif kind == "fundamentals":
                fund = FundData(msg.code, msg.ts_ns, msg.effective_date, msg.eps, msg.bps, msg.dps, msg.source)
                if in_sync:
                    ctx.on_fundamentals(fund)
                else:  # in force at once; the strategy hears of figures when it trades on them
                    ctx.set_fundamentals(fund)
            elif kind == "session_event":
                self._on_session(msg)
                in_sync = self.sync_state == SYNC_IN_SYNC
            elif kind == "order_event":
                self._on_order_event(msg)
            elif kind == "fill":
                self._on_fill(msg)
            elif kind == "ledger_adjustment":
                if msg.agent_id == self.agent.id:  # the book of record changed: rebuild the book from it
                    self._lose_sync(f"ledger adjustment {msg.adjustment_id} by {msg.who}: {msg.reason}")
                    in_sync = False
            elif kind == "command":
                self._on_command(env)
        self._after_events()

    def _date_from_market(self, ts_ns: int) -> None:
        # No session event seen yet: the market time's Korean date is the trading date.
        date = kst_date(ts_ns).strftime("%Y%m%d")
        self._resume_order_seq(date)
        self.context.trading_date = date

    def _mark_market_time(self, ts_ns: int) -> None:
        self._market_ts, self._market_mono = ts_ns, time.monotonic()

    def _on_session(self, event: Any) -> None:
        self.counters["sessions"] += 1
        self._session_phase, self._clock_speed = event.phase, event.clock_speed
        self._mark_market_time(event.ts_ns)
        if event.trading_date != self._session_date:
            self._session_date = event.trading_date
            self._resume_order_seq(event.trading_date)
        if self.sync_state != SYNC_IN_SYNC:
            return  # delivered to the strategy once the book is in sync
        self.context.on_session(event.phase, event.ts_ns, event.trading_date)
        self._flush_outbox()  # closing: the cancels go out now
        if event.phase is SessionPhase.CLOSED:
            self._write_book(event.trading_date, "closed")
            self.counters["days_written"] += 1
            self._save_strategy_state("closed")

    def _on_order_event(self, e: OrderEvent) -> None:
        if e.agent_id != self.agent.id:
            return
        self.counters["order_events"] += 1
        self._apply_order_event(e)

    def _apply_order_event(self, e: OrderEvent) -> None:
        key = (e.status.value, e.filled_qty)
        if self._order_status.get(e.client_order_id) == key:
            return  # the RPC reply and the bus carry the same event
        self._order_status[e.client_order_id] = key
        self._note_client_order_id(e.client_order_id)
        if e.status.value == "rejected":
            self.counters["orders_rejected"] += 1
            self.log.info("order %s rejected: %s %s", e.client_order_id, e.reason_code, e.reason_text)
        data = OrderEventData(e.client_order_id, e.code, e.side.value, e.status.value, e.ts_ns, e.filled_qty, e.remaining_qty, e.reason_code)
        if self.sync_state == SYNC_IN_SYNC:
            self.context.on_order_event(data)
        else:
            self.context.portfolio.on_order_event(e.client_order_id, e.status.value, e.ts_ns)

    def _on_fill(self, f: Fill) -> None:
        if f.agent_id != self.agent.id:
            return
        data = FillData(f.exec_id, f.client_order_id, f.code, f.side.value, f.qty, f.price, f.fee_won, f.tax_won, f.ts_ns)
        if self.sync_state == SYNC_IN_SYNC:
            applied = self.context.on_fill(data)
        else:
            applied = self.context.portfolio.on_fill(*data)
        self.counters["fills" if applied else "fills_duplicate"] += 1

    def _on_command(self, env: Envelope) -> None:
        cmd = env.msg
        if env.topic != f"sys.command.{self.agent.id}" or not isinstance(cmd, Command):
            return
        if cmd.name == "stop":
            self.log.info("stop requested by %s", cmd.who or "a command")
            self.stop()
        elif cmd.name == "sync":
            self._lose_sync(f"resync requested by {cmd.who or 'a command'}")
        else:
            self.log.warning("unknown command %r on %s", cmd.name, env.topic)

    # --- orders out, alerts out -------------------------------------------------------

    def _after_events(self) -> None:
        ctx = self.context
        if ctx._outbox:
            self._flush_outbox()
        if ctx._alerts:
            for a in ctx.drain_alerts():
                self.counters["alerts"] += 1
                self.alert(a.level, a.kind, a.text)
        if self._started and ctx.now() // NS_PER_MIN != self._state_minute and (
            time.monotonic() - self._state_saved_at >= STATE_SAVE_MIN_INTERVAL_S
        ):
            self._save_strategy_state("minute")

    def _save_strategy_state(self, why: str) -> None:
        """Write the strategy's state atomically; never before the saved one was given back to the strategy."""
        if not self._started:
            return
        ctx = self.context
        try:
            if ctx.resumed.get("refused") and not self._refused_state_kept:
                self._refused_state_kept = True
                aside = state_store.set_aside(self.state_path)
                if aside is not None:
                    self.log.warning("the refused strategy state is kept as %s", aside)
            state_store.write(self.state_path, ctx.save_state())
        except (OSError, TypeError) as exc:
            self.counters["state_save_errors"] += 1
            if self.counters["state_save_errors"] == 1:
                self.alert("error", "strategy_state_unsaved", f"{self.agent.id}: cannot save the strategy state ({why}): {exc}")
            else:
                self.log.warning("cannot save the strategy state (%s): %s", why, exc)
            return
        self.counters["state_saves"] += 1
        self._state_minute = ctx.now() // NS_PER_MIN
        self._state_saved_at = time.monotonic()

    def _flush_outbox(self) -> None:
        """Send the context's intents to the order manager; an unanswered one costs the sync."""
        assert self.oms is not None, "setup() makes the RPC clients"
        for _ in range(MAX_REPLY_ROUNDS):  # a refusal's reply may queue more intents: they go out in this flush too
            if not self.context.outbox:
                return
            self._flush_round()
        self.log.warning("more than %d rounds of orders in reply to refusals; the rest wait for the next event", MAX_REPLY_ROUNDS)

    def _flush_round(self) -> None:
        assert self.oms is not None, "setup() makes the RPC clients"
        if any(type(i) is OrderIntent for i in self.context.outbox):
            self._save_strategy_state("order")  # write-ahead: the step the strategy just took is saved before it goes out
        for intent in self.context.drain_outbox():
            if self.sync_state != SYNC_IN_SYNC:
                # The book already counts it as placed; the resync's rebuild drops it.
                self.counters["intents_dropped_out_of_sync"] += 1
                continue
            if isinstance(intent, OrderIntent):
                self._note_client_order_id(intent.client_order_id)
                self.counters["orders_sent"] += 1
            else:
                self.counters["cancels_sent"] += 1
            try:
                sent = time_ns()
                reply = self.oms.call(intent.to_request(), idempotency_key=_key(intent))
                self.ack_latency.add((time_ns() - sent) / 1000)
            except RpcFailure as exc:
                self.counters["rpc_failures"] += 1
                self._lose_sync(f"no answer to {type(intent).__name__} {intent.client_order_id}: {exc}")
                continue
            self._on_reply(intent, reply)

    def _on_reply(self, intent: OrderIntent | CancelIntent, reply: Message) -> None:
        if isinstance(reply, OrderEvent):
            if isinstance(intent, CancelIntent) and reply.status.value == "rejected":
                self.counters["cancels_rejected"] += 1
                order = self.context.portfolio.orders.get(intent.client_order_id)
                if order is not None:
                    order.cancel_requested = False  # the order is still ours to cancel (or already done)
                self.log.info("cancel of %s refused: %s %s", intent.client_order_id, reply.reason_code, reply.reason_text)
                return
            self._apply_order_event(reply)
            return
        text = reply.error if isinstance(reply, CommandResult) else f"unexpected {type(reply).__name__}"
        if isinstance(intent, OrderIntent):
            # A refusal in another form: the order does not exist anywhere. It is heard as a refusal all the same.
            self.counters["orders_rejected"] += 1
            reason = getattr(reply, "reason_code", "") or "REFUSED"
            self.context.on_order_event(OrderEventData(intent.client_order_id, intent.code, intent.side, "rejected",
                                                       max(intent.ts_ns, self.context.now()), 0, 0, reason))
        self.log.warning("%s %s refused: %s", type(intent).__name__, intent.client_order_id, text)

    # --- periodic work ------------------------------------------------------------

    def on_timer(self, now_monotonic: float) -> None:
        """Sync retries, the strategy's timer in market time, status refresh, log lines."""
        if self.sync_state != SYNC_IN_SYNC and now_monotonic >= self._next_sync_at:
            self._status_dirty = True
            self._try_sync(now_monotonic)
        if self.sync_state == SYNC_IN_SYNC and now_monotonic >= self._next_strategy_timer_at:
            self._status_dirty = True
            self._next_strategy_timer_at = now_monotonic + STRATEGY_TIMER_S
            market_now = self.market_now(now_monotonic)
            if market_now > 0:
                self.context.on_timer(market_now)
                self._after_events()
        if now_monotonic >= self._next_status_at and (self._status_dirty or now_monotonic >= self._idle_status_at):
            self._next_status_at = now_monotonic + STATUS_REFRESH_S
            self._idle_status_at = now_monotonic + STATUS_IDLE_REFRESH_S
            self._status_dirty = False
            self._refresh_status()
            for ts_ns, line in self.context.drain_logs():
                self.log.info("[%d] %s", ts_ns, line)
        # An idle agent wakes once a second (its strategy's timer); after any event, four times.
        quiet = self.sync_state == SYNC_IN_SYNC and not self._status_dirty
        self.timer_interval_s = IDLE_TIMER_S if quiet else BUSY_TIMER_S

    def heartbeat_idle(self) -> bool:
        """In sync, the market closed and no order open: a heartbeat with nothing new may be skipped.

        Closed: the day's session ended, or none was announced yet (before the pre-open).
        """
        return (self.sync_state == SYNC_IN_SYNC and market_closed(self._session_phase)
                and not self.context.portfolio.open_orders())

    def market_now(self, now_monotonic: float) -> int:
        """Market time: the last market event's time advanced at the clock's speed since then."""
        ts = max(self._market_ts, self.context.now())
        if not ts:
            return 0
        if not self._market_mono:
            self._market_mono = now_monotonic
        return ts + int((now_monotonic - self._market_mono) * self._clock_speed * 1e9)

    # --- status -------------------------------------------------------------------

    def trading_state(self) -> str:
        """``trading``, ``halted_by_errors`` or why the agent waits (``waiting_sync``)."""
        if self.sync_state != SYNC_IN_SYNC:
            return "waiting_sync"
        return "halted_by_errors" if self.context.halted_by_errors else "trading"

    def status(self) -> dict[str, Any]:
        """Everything the status page shows: book, open orders, prices, strategy, sync, counters."""
        ctx = self.context
        doc = ctx.status()
        doc.update(
            {
                "pid": os.getpid(),
                "dp": self.agent.dp,
                "code": self.codes[0],
                "trading": self.trading_state(),
                "open_orders": [
                    {
                        "client_order_id": o.client_order_id,
                        "code": o.code,
                        "side": o.side,
                        "qty": o.qty,
                        "price": o.price,
                        "filled_qty": o.filled_qty,
                        "remaining_qty": o.remaining_qty,
                        "status": o.status,
                        "cancel_requested": o.cancel_requested,
                        "ts_ns": o.ts_ns,
                    }
                    for o in ctx.open_orders()
                ],
                "last_prices": {c: ctx.last_price(c) for c in self.codes},
                "trading_date": ctx.trading_date,
                "sync": {
                    "state": self.sync_state,
                    "attempts": self.sync_attempts,
                    "last_sync_ns": self.last_sync_ns,
                    "error": self.sync_error,
                    "orders": self.synced_orders,
                    "fills": self.synced_fills,
                    "last_seq": self.last_seq_reported,
                },
                "counters": dict(self.counters, ignored_events=ctx.ignored_events, bad_frames=sum(self.sub.rejected.values()) if self.sub else 0),
                "status_ns": time.time_ns(),
            }
        )
        return doc

    def _refresh_status(self) -> None:
        if self.page is not None:
            self.page.update(self.status())

    def heartbeat_info(self) -> dict[str, object]:
        """The agent's book in brief, for the supervisor and the dashboard."""
        ctx = self.context
        book = ctx.portfolio
        code = self.codes[0]
        pos = book.positions.get(code)
        return {
            "agent_id": self.agent.id,
            "code": code,
            "codes": list(self.codes),
            "strategy": self.agent.strategy,
            "dp": self.agent.dp,
            "sync": self.sync_state,
            "trading": self.trading_state(),
            "cash_won": book.cash_won,
            "cash_available_won": book.cash_available_won,
            "holding": pos.qty if pos else 0,
            "avg_price": round(pos.avg_price, 2) if pos else 0.0,
            "realized_pnl_won": book.realized_pnl_won,
            "unrealized_pnl_won": book.unrealized_pnl_won(),
            "open_orders": len(book.open_orders()),
            "errors_total": ctx.errors_total,
            "last_error": ctx.last_error,
            "refused": dict(ctx.refusals.refused),  # orders the back office or the venue refused, by reason code
            "refused_own": dict(ctx.refusals.own),  # orders the agent's own checks kept back, by reason code
            "ticks": self.counters["ticks"],
            "book": book.snapshot(),
            # bus.latency histograms (µs): the venue's tick publish to on_tick, an order or cancel to its answer
            "latency": {"tick_us": self.tick_latency.counts(), "ack_us": self.ack_latency.counts()},
        }

    def _write_book(self, stem: str, why: str) -> Path:
        """Write the book and open orders as JSON under ``<run_dir>/agents/<id>/`` (atomically)."""
        folder = self.settings.run_path / "agents" / self.agent.id
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stem}.json"
        doc = self.status()
        doc["written_because"] = why
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=str))
        os.replace(tmp, path)
        self.log.info("wrote %s (%s)", path, why)
        return path


class SyncError(Exception):
    """A sync answer that cannot be used (refused, or malformed records)."""


def _parse_sync(reply: Message, agent_id: str) -> tuple[list[OrderEvent], list[Fill], int, dict[str, Any] | None,
                                                       list[dict[str, Any]]]:
    """Orders, fills, the last client order number, the ledger's opening and the adjustments since it.

    The opening (the book of record's cash and holdings at the start of the
    ledger date) is what the book starts from; the orders, fills and
    adjustments are those since.
    """
    if not isinstance(reply, CommandResult):
        raise SyncError(f"sync answered with {type(reply).__name__}")
    if not reply.ok:
        raise SyncError(f"sync refused: {reply.reason_code} {reply.error}")
    result = reply.result
    if not isinstance(result, dict):
        raise SyncError("sync result is not a mapping")
    try:
        orders = [OrderEvent.model_validate(d) for d in result.get("orders") or []]
        fills = [Fill.model_validate(d) for d in result.get("fills") or []]
    except ValueError as exc:
        raise SyncError(f"sync carried a malformed record: {exc}") from None
    # The order manager names it max_client_order_n; last_seq is the contract's older name.
    last_seq = result.get("max_client_order_n", result.get("last_seq")) or 0
    if not isinstance(last_seq, int):
        raise SyncError(f"last_seq is not an integer: {last_seq!r}")
    opening = result.get("opening")
    adjustments = result.get("adjustments") or []
    try:
        if opening is not None:
            opening = Book.from_plain(opening, "sync opening").to_plain()
        adjustments = [a for a in adjustments if a["agent_id"] == agent_id and type(a["qty"]) is int
                       and type(a["cash_won"]) is int and type(a.get("cost_won", 0)) is int and isinstance(a["code"], str)]
    except (LedgerError, KeyError, TypeError) as exc:
        raise SyncError(f"sync carried a malformed opening or adjustment: {exc}") from None
    return ([o for o in orders if o.agent_id == agent_id], [f for f in fills if f.agent_id == agent_id], last_seq,
            opening, adjustments)


def _key(intent: OrderIntent | CancelIntent) -> str:
    # Orders are idempotent on their client order id; a cancel on "cancel:<id>".
    return intent.client_order_id if isinstance(intent, OrderIntent) else f"cancel:{intent.client_order_id}"


_project_path = warm.project_path


def load_agent(agent_id: str, settings: StackSettings, roster: str | None = None,
               reading: warm.Reading | None = None) -> tuple[AgentSettings | None, dict[str, Instrument], list[str]]:
    """The agent's checked settings from the roster, the instrument master, and the problems that stop it.

    ``reading``: the instruments and roster check already read (the agents' parent's), else read here.
    """
    if reading is None:
        try:
            reading = warm.read(settings, roster)
        except (OSError, InstrumentError) as exc:
            return None, {}, [f"instrument master: {exc}"]
    instruments, report = reading.instruments, reading.report
    agent = report.agent(agent_id)
    if agent is None:
        mine = [str(p) for p in report.problems if p.agent_id in (agent_id, "-")]
        return None, instruments, mine or [f"{report.file}: no agent {agent_id!r} in the roster"]
    if not agent.enabled:
        return None, instruments, [f"{report.file}: agent {agent_id}: enabled = false"]
    return agent, instruments, []


def main(argv: list[str] | None = None) -> int:
    """``python -m agents.runtime --id ID [--roster FILE]``: run one agent until stopped."""
    parser = argparse.ArgumentParser(prog="agents.runtime", description="Run one agent of the roster.")
    parser.add_argument("--id", required=True, dest="agent_id", help="the agent's id in the roster")
    parser.add_argument("--roster", default=None, help="roster file (default: the stack's roster_file)")
    args = parser.parse_args(argv)
    configure_logging()
    reading = warm.take(args.roster)  # forked from the agents' parent: its reading, when it is this agent's too
    try:
        settings = reading.settings if reading else load_stack()
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    if reading is not None:
        log.info("settings, instrument master and roster: the agent parent's reading (the same files and environment)")
    agent, instruments, problems = load_agent(args.agent_id, settings, args.roster, reading)
    if agent is None:
        for p in problems:
            log.error("cannot start agent %s: %s", args.agent_id, p)
        return EXIT_CONFIG
    try:
        limits = agent_limits(agent.id, _project_path(settings.risk_file))
    except ConfigError as exc:
        log.error("cannot start agent %s: risk limits: %s", args.agent_id, exc)
        return EXIT_CONFIG
    return AgentRuntime(agent, settings, instruments, limits).run()


if __name__ == "__main__":
    sys.exit(main())
