"""The paper exchange process: ROUTER on ``exchange_rpc``, PUB on ``exchange_feed``, the market clock.

The shell around ``PaperVenue`` (market and matching) and ``Desk`` (requests):
it owns the clock (``clock.speed`` x wall time, jumping overnight between
trading days), publishes market data and execution notices on its feed with a
``sys.heartbeat.exchange`` each second (and with it the current
``md.session`` event again, so a client that joins mid-session learns the
session), injects faults on command (``services.exchange.faults``) and saves
what changed to ``<run_dir>/exchange/exchange.sqlite``
(``services.exchange.store``) after every order, cancel and fill and at the
day roll, before the reply or notice that reports it goes out, so a restart
(even after kill -9) loses and repeats nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, NoReturn

import zmq

from bus.pubsub import Publisher
from bus.rpc import RequestInfo, RpcServer
from bus.service import EXIT_CONFIG, Service, configure_logging
from core.calendar_cache import load_calendar
from core.config import PROJECT_ROOT, ConfigError, load_stack
from core.instruments import Instrument, load_instruments
from core.krx import KST
from core.matching import MatchingEngine
from core.messages import CancelRequest, Command, CommandResult, Heartbeat, Message, OrderRequest
from services.exchange.clock import MarketClock, first_market_day, kst_ns
from services.exchange.desk import BAD_ARGS, Desk, unknown_request
from services.exchange.faults import BAD_FAULT, FaultError, Faults, phantom_from_args
from services.exchange.store import ExchangeStore, store_path
from core.venue import FEED_HEARTBEAT_TOPIC, REFERENCE_REPEAT_S, SESSION_TOPIC
from services.exchange.venue import Outbound, PaperVenue

ACCOUNT_ID = "firm"
STATE_VERSION = 1
WALL_TICK_BUDGET_S = 3600  # caps prints per bar so a fast clock does not flood the feed
REFUSABLE_QUERIES = frozenset({"account", "positions", "open_orders", "orders_today", "fills_today", "order_status"})


class _FaultyRpcServer(RpcServer):
    """An RpcServer that can play dead (drop requests) or answer late, as the faults say."""

    def __init__(self, *args: Any, faults: Faults, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.faults = faults
        self.dropped = 0
        self._delayed: deque[tuple[int, list[bytes]]] = deque()

    def handle_ready(self, limit: int = 1000) -> int:
        n = 0
        while n < limit:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            n += 1
            now = time.monotonic_ns()
            if self.faults.disconnected(now):
                self.dropped += 1
            elif self.faults.delay_ms:
                self._delayed.append((now + self.faults.delay_ms * 1_000_000, frames))
            else:
                self._handle(frames)
        return n

    def has_delayed(self) -> bool:
        """Whether replies held back by the delay fault are waiting."""
        return bool(self._delayed)

    def release_due(self, now_ns: int) -> None:
        """Answer the delayed requests whose time has come."""
        while self._delayed and self._delayed[0][0] <= now_ns:
            self._handle(self._delayed.popleft()[1])


class ExchangeService(Service):
    """The paper broker's server: market, matching, accounts and faults behind RPC and a feed."""

    service_name = "exchange"
    timer_interval_s = 0.02
    TIMER_BUSY_S = 0.02  # while prints are due: the market moves smoothly
    TIMER_IDLE_S = 0.25  # while nothing is due for a while (the night, a slow clock, delayed replies aside)

    def setup(self) -> None:
        s = self.settings
        self.log.info("XKRX calendar %s", load_calendar())
        self.instruments = self._instruments()
        configured = s.exchange.faults
        self.faults = Faults(
            seed=s.clock.seed, delay_ms=configured.delay_ms, reject_fraction=configured.reject_fraction,
            notice_before_reply=configured.notice_before_reply, duplicate_notice=configured.duplicate_notice,
        )
        self.store = ExchangeStore(store_path(s.run_path))
        self.state_file = self.store.path
        self.venue, self.clock, first_out = self._start_market()
        self.desk = Desk(self.venue, ACCOUNT_ID, self._restored_rejected, past_day=self.store.past_day,
                         past_dates=self.store.past_dates)
        assert self.ctx is not None
        self.feed = Publisher(self.ctx, s.endpoint("exchange_feed"), self.name, bind=True,
                              sndhwm=s.bus.sndhwm, linger_ms=s.bus.linger_ms)
        self.server = _FaultyRpcServer(self.ctx, s.endpoint("exchange_rpc"), self._on_request, name=self.name,
                                       linger_ms=s.bus.linger_ms, faults=self.faults)
        self._pending: Outbound = []
        self.add_socket(self.server.socket, self._on_rpc)
        self._next_feed_hb = 0.0
        self._next_references = 0.0
        self._save(everything=True)
        self._publish(first_out)

    # --- start-up ----------------------------------------------------------------

    def _instruments(self) -> dict[str, Instrument]:
        path = Path(self.settings.market.instruments_file)
        if not path.is_absolute() and not path.exists():
            path = PROJECT_ROOT / path
        master = load_instruments(path)
        codes = self.settings.market.codes or list(master)
        unknown = [c for c in codes if c not in master]
        if unknown:
            raise ValueError(f"market.codes not in the instrument master {path}: {', '.join(unknown)}")
        return {c: master[c] for c in codes}

    def _start_market(self) -> tuple[PaperVenue, MarketClock, Outbound]:
        """Resume from the saved state if there is one (crash-only start), else open the first day."""
        s = self.settings
        speed = s.clock.speed
        ticks_per_bar = max(4, min(60_000 // s.market.tick_interval_ms, int(WALL_TICK_BUDGET_S / speed)))
        saved = self.store.load()
        self._restored_rejected: dict[str, dict[str, Any]] = {}
        if saved is not None:
            if saved.get("version") != STATE_VERSION:
                raise ValueError(f"{self.state_file}: state version {saved.get('version')!r}, expected {STATE_VERSION}")
            instruments = {c: self.instruments[c] for c in saved["codes"]} if all(
                c in self.instruments for c in saved["codes"]) else self.instruments
            engine = MatchingEngine.from_state(saved["engine"], instruments)
            venue = PaperVenue(instruments, engine, seed=saved["seed"], first_day=dt.date.fromisoformat(saved["first_day"]),
                               max_ticks_per_bar=ticks_per_bar, clock_speed=speed)
            market_ns = int(saved["market_ns"])
            out = venue.resume_day(int(saved["days_simulated"]), market_ns)
            self._restored_rejected = dict(saved.get("rejected", {}))
            self.log.info("resumed from %s at %s with %d order(s), %d fill(s) today", self.state_file,
                          dt.datetime.fromtimestamp(market_ns / 1e9, KST).isoformat(),
                          len(engine.orders_today()), len(engine.fills_today()))
            return venue, MarketClock(market_ns, time.monotonic_ns(), speed), out
        engine = MatchingEngine(self.instruments)
        engine.open_account(ACCOUNT_ID, s.broker.account_cash_won)
        first_day = first_market_day(s.clock.start_date, dt.datetime.now(KST).date())
        venue = PaperVenue(self.instruments, engine, seed=s.clock.seed, first_day=first_day,
                           max_ticks_per_bar=ticks_per_bar, clock_speed=speed)
        start_ns = kst_ns(venue.sim.next_date, s.clock.start_time)
        out = venue.begin_day(start_ns)
        self.log.info("opened %s at %s, clock x%g", venue.trading_date, s.clock.start_time, speed)
        return venue, MarketClock(start_ns, time.monotonic_ns(), speed), out

    # --- the loop ----------------------------------------------------------------

    def on_timer(self, now_monotonic: float) -> None:
        wall = time.monotonic_ns()
        self.server.release_due(wall)
        self._flush_pending()
        market_ns = self.clock.now(wall)
        out = self.venue.advance(market_ns)
        if market_ns >= self.venue.day_end_ns:
            landing = self.venue.next_pre_open_ns()
            self.store.save_past_day(self.venue.trading_date, *self.desk.day_record())  # answered after the night
            self.desk.new_day()
            out += self.venue.begin_day(landing)
            self.clock.jump(landing, time.monotonic_ns())
            self.log.info("overnight: now %s", self.venue.trading_date)
        heartbeat_due = now_monotonic >= self._next_feed_hb
        # The market clock is saved with every phase change and at least once a second, so a
        # restarted exchange resumes where it was and never reopens a day it has closed.
        if self.venue.changed or heartbeat_due or (self.venue.phase, self.venue.trading_date) != self._saved_phase:
            self._save()
        self._publish(out)
        if heartbeat_due:
            self._next_feed_hb = now_monotonic + 1.0
            self._feed_heartbeat()
        wall_until_next_s = (self.venue.next_event_ns() - market_ns) / 1e9 / self.clock.speed
        busy = wall_until_next_s < self.TIMER_IDLE_S or self.server.has_delayed() or self._pending
        self.timer_interval_s = self.TIMER_BUSY_S if busy else min(self.TIMER_IDLE_S, wall_until_next_s)

    def _on_rpc(self) -> None:
        self.server.handle_ready()
        self._flush_pending()

    def _on_request(self, msg: Message, info: RequestInfo) -> Message:
        now = self.venue.now_ns
        if isinstance(msg, OrderRequest):
            reply, out = self.desk.place(msg, now, reject_at_random=self.faults.reject_next_order())
        elif isinstance(msg, CancelRequest):
            reply, out = self.desk.cancel(msg, now)
        elif isinstance(msg, Command):
            if msg.name == "fault":
                return self._fault(msg)
            if msg.name in REFUSABLE_QUERIES and self.faults.refusing_queries(time.monotonic_ns()):
                return CommandResult(command_id=msg.command_id, ok=False, reason_code="BROKER_DISCONNECTED",
                                     error="the account's records cannot be read now (fault refuse_queries)")
            return self.desk.query(msg, now)
        else:
            return unknown_request(msg)
        if self.venue.changed:
            # before the reply leaves: an acknowledged order survives a crash (the market's prices
            # follow with the next timer's save)
            self._save(markets=False)
        if self.faults.notice_before_reply:
            self._publish(out)
        else:
            self._pending.extend(out)
        return reply

    def _fault(self, cmd: Command) -> CommandResult:
        if cmd.args.get("kind") == "phantom":
            return self._phantom(cmd)
        try:
            result = self.faults.apply(dict(cmd.args), time.monotonic_ns())
        except FaultError as exc:
            return CommandResult(command_id=cmd.command_id, ok=False, error=str(exc), reason_code=BAD_FAULT)
        except (TypeError, ValueError) as exc:
            return CommandResult(command_id=cmd.command_id, ok=False, error=str(exc), reason_code=BAD_ARGS)
        self.log.warning("fault injected: %s", cmd.args)
        return CommandResult(command_id=cmd.command_id, ok=True, result=result)

    def _phantom(self, cmd: Command) -> CommandResult:
        """Change the account without a fill (see ``services.exchange.faults``), saved before the reply."""
        try:
            change = phantom_from_args(dict(cmd.args))
        except FaultError as exc:
            return CommandResult(command_id=cmd.command_id, ok=False, error=str(exc), reason_code=BAD_FAULT)
        try:
            self.venue.engine.adjust_account(ACCOUNT_ID, change.code, change.qty, change.cash_won)
        except ValueError as exc:
            return CommandResult(command_id=cmd.command_id, ok=False, error=f"phantom: {exc}", reason_code=BAD_FAULT)
        self._save(markets=False)
        self.log.warning("fault injected: phantom account change %s", cmd.args)
        held = self.venue.engine.positions(ACCOUNT_ID).get(change.code)
        view = self.venue.engine.account(ACCOUNT_ID)
        assert view is not None
        return CommandResult(command_id=cmd.command_id, ok=True, result={
            "code": change.code, "qty": held.qty if held else 0, "cash_won": view.cash_won})

    # --- output ------------------------------------------------------------------

    def _flush_pending(self) -> None:
        if self._pending:
            out, self._pending = self._pending, []
            self._publish(out)

    def _publish(self, out: Outbound) -> None:
        if not out or self.faults.disconnected(time.monotonic_ns()):
            return
        times = 2 if self.faults.duplicate_notice else 1
        publish = self.feed.publish
        for topic, msg in out:
            publish(topic, msg)
            if times == 2 and topic.startswith("exec."):
                publish(topic, msg)

    def _feed_heartbeat(self) -> None:
        if self.faults.disconnected(time.monotonic_ns()):
            return
        info: dict[str, object] = {
            "trading_date": self.venue.trading_date, "session": self.venue.session_name(),
            "market_ts_ns": self.venue.now_ns, "faults": self.faults.describe(time.monotonic_ns()),
        }
        info.update(self.feed.heartbeat_info())
        self.feed.publish(FEED_HEARTBEAT_TOPIC, Heartbeat(
            name=self.name, pid=os.getpid(), state=self.state, ts_ns=time.time_ns(),
            last_seq=self.feed.last_seq, info=info,
        ))
        session = self.venue.session_in_force()
        if session is not None:  # repeated so that a client started mid-session learns it
            self.feed.publish(SESSION_TOPIC, session)
        now = time.monotonic()
        if now >= self._next_references:  # the same for the day's base prices and limits
            self._next_references = now + REFERENCE_REPEAT_S
            for topic, msg in self.venue.references():
                self.feed.publish(topic, msg)

    def heartbeat_info(self) -> dict[str, object]:
        return {"trading_date": self.venue.trading_date, "session": self.venue.session_name(),
                "dropped_requests": self.server.dropped}

    def _save(self, *, everything: bool = False, markets: bool = True) -> None:
        """Write what changed since the last save (one transaction)."""
        venue = self.venue
        service = {
            "version": STATE_VERSION, "seed": venue.seed, "first_day": venue.first_day.isoformat(),
            "codes": list(venue.instruments), "days_simulated": venue.days_simulated, "market_ns": venue.now_ns,
        }
        refusals = list(self.desk.rejected.items()) if everything else self.desk.take_unsaved_refusals()
        self.store.save(service, venue.engine, venue.engine.take_changes(), refusals, everything=everything,
                        markets=markets)
        venue.changed = not markets  # the markets' rows are still to be written
        self._saved_phase = (venue.phase, venue.trading_date)

    def teardown(self) -> None:
        store = getattr(self, "store", None)
        if store is not None:
            store.close()


def main() -> NoReturn:
    """``python -m services.exchange``: the paper exchange, unless the stack trades through another venue."""
    configure_logging()
    log = logging.getLogger(ExchangeService.service_name)
    try:
        settings = load_stack()
    except ConfigError as exc:
        log.error("%s", exc)
        sys.exit(EXIT_CONFIG)
    if settings.broker.kind != "paper":
        log.error("refusing to start: broker.kind is %r, so the stack's venue is the KIS gateway, not the paper "
                  "exchange (nothing trades paper by mistake)", settings.broker.kind)
        sys.exit(EXIT_CONFIG)
    sys.exit(ExchangeService(ExchangeService.service_name, settings).run())
