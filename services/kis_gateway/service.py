"""The KIS gateway process: the venue protocol (``core.venue``) on one side, KIS's REST and WebSocket on the other.

It binds where the paper exchange would (``exchange_rpc`` ROUTER, ``exchange_feed``
PUB), so the order manager, the market-data feed and the reconciler cannot tell
which venue runs. It is the only process that knows KIS's wire format:

* orders: journaled (``store``) with their client order id before they are sent,
  then KIS's order number; a reply that never comes leaves the order of unknown
  fate (answered SUBMITTED, never sent again) until the daily orders tell
  (``book``); a cancel is an order-rvsecncl cancel of the order's number;
* executions: notices from the stream, and the daily orders as the catch-up,
  become fills whose execution id both agree on;
* market data: H0STCNT0 trades become ``md.tick.<code>`` and 1-minute bars, the
  session comes from the market clock (``clock``), and the feed heartbeat
  ``sys.heartbeat.venue`` goes out every second;
* the connection: when the stream drops, new orders are refused until it is
  back, subscribed again and the daily orders and the balance were read (the
  catch-up), so nothing the firm missed meanwhile is lost.

``broker.kis.env = "real"`` refuses to start unless ``TRADER_LIVE=yes``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections import Counter
from typing import Any, NoReturn

from pathlib import Path

import httpx
import zmq

from agents.settings import check_roster
from bus.pubsub import Publisher
from bus.rpc import RequestInfo, RpcServer
from bus.service import EXIT_CONFIG, Service, configure_logging
from core.config import PROJECT_ROOT, ConfigError, load_stack, project_path
from core.instruments import InstrumentError, load_instruments
from core.krx import tick_size
from core.messages import (
    AlertLevel,
    Bar,
    CancelRequest,
    Command,
    CommandResult,
    DayReference,
    Fundamentals,
    Heartbeat,
    InvestorFlow,
    Message,
    OrderEvent,
    OrderRequest,
    OrderStatus,
    Quote,
    SessionEvent,
    SessionPhase,
    Side,
    Tick,
)
from core.venue import (
    BAD_ARGS,
    FEED_HEARTBEAT_TOPIC,
    QUERIES,
    REFERENCE_REPEAT_S,
    SESSION_TOPIC,
    UNKNOWN_COMMAND,
    UNKNOWN_ORDER,
    UNKNOWN_REQUEST,
    bar_topic,
    flow_topic,
    fundamentals_topic,
    quote_topic,
    reference_topic,
    tick_topic,
)
from services.kis_gateway import rest as kis
from services.kis_gateway.bars import MinuteBars
from services.kis_gateway.book import ACCEPTED, KisBook, Outbound, foreign_fills, foreign_orders
from services.kis_gateway.clock import SimClock, WallClock
from services.kis_gateway.notices import BookRecord, NoticeRecord, TickRecord
from services.kis_gateway.safety import mask_account, start_problems
from services.kis_gateway.store import GatewayStore
from services.kis_gateway.stream import Resubscribed, StateChange, StreamClient, StreamProblem

NAME = "kis-gateway"
QUOTE_INTERVAL_S = 0.25  # a code's unchanged book goes out at most this often
REFERENCE_RETRY_S = 30.0  # a code whose reference could not be read is asked again after this long
POLL_INTERVAL_S = 1.0  # one background REST read (flows, polled prices) a second leaves the rest to orders
CATCH_UP_INTERVAL_S = 10.0  # the daily orders are read this often while orders are open (missed notices)
IN_DOUBT_INTERVAL_S = 1.0  # ... and this often while an order's fate is unknown
ALERT_KIND = "broker_connection"
BROKER_DISCONNECTED = "BROKER_DISCONNECTED"
REDUCE_ONLY = "REDUCE_ONLY_UNRESOLVED_ORDER"
BAD_FAULT = "BAD_FAULT"
log = logging.getLogger(NAME)
logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per KIS call is too many; failures are logged


class KisGateway(Service):
    """The venue process for ``broker.kind = "kis"``."""

    service_name = NAME
    timer_interval_s = 0.05

    def setup(self) -> None:
        s = self.settings
        cfg = s.broker.kis
        creds = s.kis_credentials()
        self.env = cfg.env
        self.account = creds["account"]
        self.hts_id = creds["hts_id"]
        self.live = cfg.env == "real"
        rest_url, ws_url = cfg.urls()
        if self.live:
            self.log.warning("LIVE: trading real money through KIS on account %s", mask_account(self.account))
        self.log.info("KIS %s server %s (%s), stream %s, account %s", cfg.env, cfg.server, rest_url, ws_url,
                      mask_account(self.account))
        home = s.run_path / "kis-gateway"
        home.mkdir(parents=True, exist_ok=True)
        self.rest = kis.KisRest(rest_url, cfg.env, creds["appkey"], creds["appsecret"], self.account,
                                home / "tokens.json", rate_per_s=cfg.rate_per_s, timeout_s=cfg.order_timeout_s)
        self.clock: SimClock | WallClock = SimClock(rest_url) if cfg.server == "kis-sim" else WallClock()
        self.book = KisBook()
        self.book.wall_ns = time.monotonic_ns()
        self.store = GatewayStore(home / "gateway.sqlite")
        self.store.load(self.book)
        self.log.info("journal: %s", self.store.counts())
        self.bars = MinuteBars()
        self.codes = self._codes()
        self.quotes: dict[str, dict[str, int]] = {}
        self.references: dict[str, DayReference] = {}  # code -> its base price and limits (inquire-price)
        self.fundamentals: dict[str, Fundamentals] = {}  # code -> its EPS and BPS (inquire-price)
        self._book_sent: dict[str, tuple[float, Any]] = {}  # code -> when its book last went out, and its touch
        self._dividends: dict[str, int] = {}
        self._next_references = 0.0
        self._reference_asked: dict[str, float] = {}  # code -> when inquire-price was last asked for its reference
        self.counters: Counter[str] = Counter()
        self.stream = StreamClient(ws_url, approval=self.rest.approval_key, drop_approval=self._drop_approval,
                                   hts_id=self.hts_id, env=cfg.env, max_registrations=cfg.max_registrations)
        self.stream.want(self.codes)
        assert self.ctx is not None
        self.feed = Publisher(self.ctx, s.endpoint("exchange_feed"), self.name, bind=True, sndhwm=s.bus.sndhwm,
                              linger_ms=s.bus.linger_ms)
        self.server = RpcServer(self.ctx, s.endpoint("exchange_rpc"), self._on_request, name=self.name,
                                linger_ms=s.bus.linger_ms)
        self.add_socket(self.server.socket, self._on_rpc)
        self._pending: Outbound = []
        self.ready = False  # the stream is up and the catch-up after it has run: new orders may go out
        self.stream_state = "disconnected"
        self._catch_up_due = time.monotonic()
        self._balance: tuple[float, Any] | None = None
        self._daily_rows: dict[str, tuple[float, list[Any]]] = {}
        self._last_phase: tuple[SessionPhase, str] | None = None
        self._next_feed_hb = 0.0
        self._flows_due: list[str] = []  # codes whose investor flows of the closed day are still to be read
        self._flows_date = ""
        self._poll_turn = 0  # round robin over the codes the stream does not carry (beyond the registrations)
        self._next_poll = 0.0
        # the stream's wake-up pipe, polled next to the sockets (a zmq Poller reports a raw fd by its number)
        wake = self.stream.fileno()
        self._poller.register(wake, zmq.POLLIN)
        self._handlers[wake] = self._on_stream  # type: ignore[index]
        self.stream.start()

    def _codes(self) -> list[str]:
        """The codes to stream: the enabled agents' first (in roster order), then the rest of the market."""
        s = self.settings
        path = Path(s.market.instruments_file)
        master = load_instruments(path if path.is_absolute() or path.exists() else PROJECT_ROOT / path)
        self._dividends = {c: inst.dividend for c, inst in master.items()}
        codes = [c for c in (s.market.codes or list(master)) if c in master]
        first: list[str] = []
        try:
            roster = check_roster(project_path(s.roster_file), master, s)
            for agent in roster.enabled_agents:
                first += [c for c in agent.all_codes if c in codes and c not in first]
        except (OSError, InstrumentError) as exc:
            self.log.warning("no roster (codes streamed in the master's order): %s", exc)
        return first + [c for c in codes if c not in first]

    def _drop_approval(self) -> None:
        drop = getattr(self.rest, "drop_approval", None)
        if drop is not None:
            drop()

    # --- requests ----------------------------------------------------------------

    def _on_rpc(self) -> None:
        self.server.handle_ready()
        self._flush()

    def _on_request(self, msg: Message, info: RequestInfo) -> Message:
        self.book.wall_ns = time.monotonic_ns()
        try:
            if isinstance(msg, OrderRequest):
                return self._place(msg)
            if isinstance(msg, CancelRequest):
                return self._cancel(msg)
            if isinstance(msg, Command):
                return self._command(msg)
        finally:
            self._save()
        return CommandResult(command_id="-", ok=False, reason_code=UNKNOWN_REQUEST,
                             error=f"the KIS gateway does not serve {type(msg).__name__} requests")

    def _refuse(self, req: OrderRequest, reason: str, text: str) -> OrderEvent:
        self.counters[f"refused:{reason}"] += 1
        return OrderEvent(client_order_id=req.client_order_id, agent_id=req.agent_id, code=req.code, side=req.side,
                          status=OrderStatus.REJECTED, qty=req.qty, price=req.price, reason_code=reason,
                          reason_text=text, ts_ns=self.clock.now().ts_ns)

    def _place(self, req: OrderRequest) -> OrderEvent:
        mt = self.clock.now()
        known = self.book.orders.get(req.client_order_id)
        if known is not None:
            return known.event(mt.ts_ns)  # the same order again: its record, never a second order
        if not self.ready:
            return self._refuse(req, BROKER_DISCONNECTED, f"the KIS connection is {self.stream_state} or catching "
                                                          "up; the order was not sent")
        if req.side is Side.BUY and req.code in self.book.reduce_only_codes():
            return self._refuse(req, REDUCE_ONLY, f"an order in {req.code} could not be told apart at KIS; "
                                                  "buying there waits until it is resolved")
        order = self.book.register(req.client_order_id, req.agent_id, req.code, req.side.value,
                                   req.order_type.value, req.qty, req.price, mt.trading_date, mt.ts_ns)
        self._save()  # journaled before it leaves
        try:
            reply = self.rest.place(req.code, req.side.value, req.qty, req.price, req.order_type.value)
        except kis.KisRateLimited as exc:
            self.book.rejected(order.client_order_id, "RATE_LIMIT_EXCEEDED", f"KIS's rate limit: {exc}", mt.ts_ns)
        except kis.KisRejected as exc:
            self.book.rejected(order.client_order_id, exc.reason_code, f"{exc.msg_cd} {exc.text}", mt.ts_ns)
        except kis.KisUnavailable as exc:
            self.book.rejected(order.client_order_id, BROKER_DISCONNECTED, f"not sent: {exc}", mt.ts_ns)
        except Exception as exc:  # noqa: BLE001 - KisFateUnknown, or anything that leaves the fate open
            why = str(exc) or type(exc).__name__
            if not isinstance(exc, kis.KisFateUnknown):
                self.log.exception("order %s: unexpected failure; its fate is unknown", order.client_order_id)
            self.book.unknown(order.client_order_id, why, mt.ts_ns)
            self.alert(AlertLevel.WARNING, "kis_order_unknown", f"{order.client_order_id}: no answer from KIS "
                                                                 f"({why}); looking for it in the daily orders")
            self._catch_up_due = 0.0
        else:
            self._pending += self.book.accepted(order.client_order_id, reply.odno, reply.branch, reply.ord_tmd,
                                                mt.ts_ns)[1:]
        return order.event(mt.ts_ns)

    def _cancel(self, req: CancelRequest) -> Message:
        mt = self.clock.now()
        order = self.book.orders.get(req.client_order_id)
        if order is None:
            return CommandResult(command_id="-", ok=False, reason_code=UNKNOWN_ORDER,
                                 error=f"no order {req.client_order_id!r} at KIS")
        open_qty = order.open_qty

        def refused(reason: str, text: str) -> OrderEvent:
            return order.event(mt.ts_ns).model_copy(update={"status": OrderStatus.REJECTED, "reason_code": reason,
                                                           "reason_text": text})

        if order.state != ACCEPTED or open_qty <= 0:
            return refused("ORDER_NOT_OPEN", f"the order is {order.status.value}")
        if req.qty > open_qty:
            return refused("CANCEL_QTY_EXCEEDS_REMAINING", f"{req.qty} to cancel, {open_qty} open")
        qty = req.qty or open_qty
        self.book.cancel_sent(order.client_order_id, qty, mt.ts_ns)
        self._save()
        try:
            reply = self.rest.cancel(order.odno, order.branch, qty, qty == open_qty, order.code)
        except (kis.KisRateLimited, kis.KisUnavailable) as exc:
            self.book.cancel_failed(order.client_order_id, mt.ts_ns)
            return refused(BROKER_DISCONNECTED, f"the cancel was not sent: {exc}")
        except kis.KisRejected as exc:
            self.book.cancel_failed(order.client_order_id, mt.ts_ns)
            return refused(exc.reason_code or "CANCEL_REFUSED", f"{exc.msg_cd} {exc.text}")
        except Exception as exc:  # noqa: BLE001 - fate unknown: the daily orders will tell
            if not isinstance(exc, kis.KisFateUnknown):
                self.log.exception("cancel of %s: unexpected failure", order.client_order_id)
            self._catch_up_due = 0.0
            return order.event(mt.ts_ns)  # CANCEL_PENDING until KIS's record says
        out = self.book.cancel_done(order.client_order_id, reply.odno, qty, mt.ts_ns)
        return out[0][1] if out else order.event(mt.ts_ns)  # type: ignore[return-value]

    def _command(self, cmd: Command) -> CommandResult:
        name, args = cmd.name, cmd.args

        def ok(result: Any) -> CommandResult:
            return CommandResult(command_id=cmd.command_id, ok=True, result=result)

        def refuse(code: str, text: str) -> CommandResult:
            return CommandResult(command_id=cmd.command_id, ok=False, reason_code=code, error=text)

        mt = self.clock.now()
        fresh = args.get("fresh", False)
        if not isinstance(fresh, bool):
            return refuse(BAD_ARGS, f"{name}: fresh is true or false, not {fresh!r}")
        try:
            if name in ("ping", "clock"):
                # no date or session before the market clock could be read: a guess would open the wrong day
                return ok({"ts_ns": mt.ts_ns, "trading_date": mt.trading_date if mt.known else "",
                           "session": mt.phase.value if mt.known else "",
                           "clock_speed": mt.speed, "venue": "kis", "env": self.env, "ready": self.ready,
                           "stream": self.stream_state})
            if name in ("account", "positions"):
                bal = self._read_balance(fresh)
                if name == "positions":
                    return ok({c: {"qty": q, "avg_price": p} for c, (q, p) in bal.positions.items() if q})
                return ok({"cash_won": bal.cash_won, **{k: v for k, v in _plain(bal).items()
                                                        if k.endswith("_won") and k != "cash_won"}})
            if name == "open_orders":
                return ok([o.event(mt.ts_ns).model_dump(mode="json") for o in self.book.open()])
            if name in ("orders_today", "fills_today"):
                date = args.get("trading_date") or mt.trading_date
                if not isinstance(date, str) or len(date) != 8 or not date.isdigit():
                    return refuse(BAD_ARGS, f"{name} takes args {{trading_date?: YYYYMMDD}}")
                rows = self._catch_up(date) if fresh else self._daily(date)
                if name == "orders_today":
                    return ok([o.event(mt.ts_ns).model_dump(mode="json") for o in self.book.of_day(date)]
                              + [e.model_dump(mode="json") for e in foreign_orders(self.book, rows, date)])
                return ok([f.model_dump(mode="json") for f in self.book.fills_of_day(date)]
                          + [f.model_dump(mode="json") for f in foreign_fills(self.book, rows, date)])
            if name == "order_status":
                coid = args.get("client_order_id")
                if not isinstance(coid, str) or not coid:
                    return refuse(BAD_ARGS, "order_status needs args {client_order_id: str}")
                order = self.book.orders.get(coid)
                return ok(order.event(mt.ts_ns).model_dump(mode="json") if order else None)
            if name == "quote":
                code = args.get("code")
                if not isinstance(code, str) or code not in self.codes:
                    return refuse("UNKNOWN_CODE", f"{code!r} is not traded here")
                return ok(self._quote(code))
            if name == "adopt":
                coid, odno = args.get("client_order_id"), args.get("odno")
                if not isinstance(coid, str) or not isinstance(odno, str) or coid not in self.book.orders:
                    return refuse(BAD_ARGS, "adopt needs args {client_order_id: a firm order, odno: KIS's number}")
                self._pending += self.book.adopt(coid, odno, mt.ts_ns)
                return ok(self.book.orders[coid].event(mt.ts_ns).model_dump(mode="json"))
            if name == "fault":
                return self._fault(cmd)
            if name == "status":
                return ok(self.describe())
        except ValueError as exc:
            return refuse(BAD_ARGS, str(exc))
        except (kis.KisUnavailable, kis.KisRateLimited, kis.KisBadReply, kis.KisFateUnknown) as exc:
            return refuse(BROKER_DISCONNECTED, f"KIS did not answer: {exc}")
        except kis.KisRejected as exc:
            return refuse(exc.reason_code or "KIS_REFUSED", f"{exc.msg_cd} {exc.text}")
        return refuse(UNKNOWN_COMMAND, f"unknown command {name!r}; try one of {', '.join(QUERIES)}, adopt, "
                                       "status, fault")

    def _read_balance(self, fresh: bool = False) -> Any:
        """KIS's balance: as read within ``broker.kis.balance_max_age_s``, or read now (``fresh``, or none that recent)."""
        now = time.monotonic()
        if fresh or self._balance is None or now - self._balance[0] > self.settings.broker.kis.balance_max_age_s:
            self._balance = (now, self.rest.balance())
        return self._balance[1]

    def _quote(self, code: str) -> dict[str, int]:
        """The venue protocol's quote (the paper exchange's keys): the stream's prices, the day's limits."""
        mt = self.clock.now()
        ref = self.references.get(code)
        if ref is None or ref.trading_date != mt.trading_date:
            self._read_reference(code, mt)
            ref = self.references[code]
        q = self.quotes.get(code, {})
        last = q.get("last") or ref.base_price
        return {"last": last, "bid": q.get("bid", 0), "ask": q.get("ask", 0), "tick_size": tick_size(last),
                "lower_limit": ref.lower_limit, "upper_limit": ref.upper_limit, "base_price": ref.base_price,
                "volume": q.get("volume", 0)}

    def _read_reference(self, code: str, mt: Any) -> None:
        """inquire-price: the code's base price and limits for the day (published), and its price now."""
        self._reference_asked[code] = time.monotonic()
        p = self.rest.price(code)
        q = self.quotes.setdefault(code, {})
        q.update(last=p.last, volume=p.volume)
        if p.base <= 0 or p.lower <= 0:
            raise kis.KisBadReply("inquire-price", f"{code}: base price {p.base} / limits {p.lower}..{p.upper}")
        ref = DayReference(code=code, trading_date=mt.trading_date, ts_ns=mt.ts_ns, base_price=p.base,
                           lower_limit=p.lower, upper_limit=p.upper)
        if self.references.get(code) != ref:
            self.references[code] = ref
            self.feed.publish(reference_topic(code), ref)
        self.counters["references"] += 1
        if p.bps > 0 and math.isfinite(p.eps) and math.isfinite(p.bps):
            # KIS gives EPS and BPS, not the dividend: DPS is the instrument master's
            fund = Fundamentals(code=code, ts_ns=mt.ts_ns, effective_date=mt.trading_date, eps=round(p.eps), bps=round(p.bps),
                                dps=max(self._dividends.get(code, 0), 0), source="kis")
            known = self.fundamentals.get(code)
            if known is None or (known.eps, known.bps, known.dps) != (fund.eps, fund.bps, fund.dps):
                self.fundamentals[code] = fund
                self.feed.publish(fundamentals_topic(code), fund)

    def _fault(self, cmd: Command) -> CommandResult:
        """A fault at the local kis-sim (rehearsal only): its ``/kis-sim/fault`` control."""
        if self.settings.broker.kis.server != "kis-sim":
            return CommandResult(command_id=cmd.command_id, ok=False, reason_code=BAD_FAULT,
                                 error="faults exist only against the local kis-sim")
        rest_url, _ = self.settings.broker.kis.urls()
        try:
            r = httpx.post(f"{rest_url}/kis-sim/fault", json=dict(cmd.args), timeout=5)
            body = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            return CommandResult(command_id=cmd.command_id, ok=False, reason_code=BAD_FAULT, error=str(exc))
        if r.status_code != 200:
            return CommandResult(command_id=cmd.command_id, ok=False, reason_code=BAD_FAULT,
                                 error=str(body.get("error", body)))
        self.log.warning("fault injected at kis-sim: %s", cmd.args)
        return CommandResult(command_id=cmd.command_id, ok=True, result=body)

    # --- the catch-up -------------------------------------------------------------

    def _daily(self, trading_date: str) -> list[Any]:
        """KIS's daily orders of a day: as last read when that was lately, else read (and caught up with) now."""
        seen = self._daily_rows.get(trading_date)
        if seen is not None and time.monotonic() - seen[0] < self.settings.broker.kis.daily_max_age_s:
            return seen[1]
        return self._catch_up(trading_date)

    def _catch_up(self, trading_date: str) -> list[Any]:
        """Read KIS's daily orders of a day and bring the book in line; the rows."""
        rows = self.rest.daily_orders(trading_date, trading_date)
        self.book.clock_speed = max(1.0, self.clock.now().speed)
        self._daily_rows[trading_date] = (time.monotonic(), rows)
        for old in sorted(self._daily_rows)[:-3]:
            del self._daily_rows[old]
        self.book.wall_ns = time.monotonic_ns()
        self._pending += self.book.on_daily(rows, trading_date, self.clock.now().ts_ns)
        self._save()
        self.counters["catch_ups"] += 1
        return rows

    # --- the stream ---------------------------------------------------------------

    def _on_stream(self) -> None:
        try:
            self._stream_events()
        except Exception:  # as for the timer: one batch of events, never the process
            self.counters["stream_errors"] += 1
            self.log.exception("stream events failed; going on")

    def _stream_events(self) -> None:
        self.book.wall_ns = time.monotonic_ns()
        mt = self.clock.now()
        for ev in self.stream.drain():
            if isinstance(ev, TickRecord):
                self._on_tick(ev, mt.trading_date)
            elif isinstance(ev, NoticeRecord):
                self.counters["notices"] += 1
                self._pending += self.book.on_notice(ev, mt.trading_date, mt.ts_ns)
            elif isinstance(ev, BookRecord):
                q = self.quotes.setdefault(ev.code, {})
                if ev.asks and ev.bids:
                    q["ask"], q["bid"] = int(ev.asks[0]), int(ev.bids[0])
                self._publish_book(ev, mt.ts_ns)
            elif isinstance(ev, StateChange):
                self._on_state(ev)
            elif isinstance(ev, Resubscribed):
                self.ready = False
                self._catch_up_due = 0.0  # before the firm trades again
            elif isinstance(ev, StreamProblem):
                self.counters[f"stream_problem:{ev.kind}"] += 1
                self.log.warning("stream: %s: %s", ev.kind, ev.text)
        if self.book.daily_check_due:  # a fill notice after a catch-up: the daily orders tell if it is new
            self.book.daily_check_due = False
            self._catch_up_due = 0.0
            self.counters["notices_checked"] += 1
        self._save()
        self._flush()

    def _on_tick(self, t: TickRecord, trading_date: str) -> None:
        ts = t.ts_ns
        q = self.quotes.setdefault(t.code, {})
        q["last"] = t.price
        self.feed.publish(tick_topic(t.code), Tick(code=t.code, ts_ns=ts, price=t.price, qty=t.qty,
                                                   cum_volume=t.cum_volume, bid=t.bid1, ask=t.ask1))
        for bar in self.bars.on_tick(t.code, ts, t.price, t.qty):
            self._publish_bar(bar)

    def _publish_book(self, rec: BookRecord, ts_ns: int) -> None:
        """KIS's ten-level book as md.quote, at most every QUOTE_INTERVAL_S per code (a change of touch goes at once)."""
        bid_px, bid_qty = _levels(rec.bids, rec.bid_qty)
        ask_px, ask_qty = _levels(rec.asks, rec.ask_qty)
        if bid_px and ask_px and bid_px[0] >= ask_px[0]:
            self.counters["crossed_books"] += 1  # a crossed record (an auction's expected price): not a book to show
            return
        touch = (bid_px[:1], ask_px[:1])
        now = time.monotonic()
        last = self._book_sent.get(rec.code)
        if last is not None and last[1] == touch and now - last[0] < QUOTE_INTERVAL_S:
            return
        self._book_sent[rec.code] = (now, touch)
        self.feed.publish(quote_topic(rec.code), Quote(code=rec.code, ts_ns=ts_ns, bid_px=bid_px, bid_qty=bid_qty,
                                                       ask_px=ask_px, ask_qty=ask_qty))

    def _publish_bar(self, bar: Any) -> None:
        msg = bar if isinstance(bar, Bar) else Bar(code=bar.code, ts_ns=bar.ts_ns, open=bar.open, high=bar.high,
                                                   low=bar.low, close=bar.close, volume=bar.volume)
        self.feed.publish(bar_topic(msg.code), msg)

    def _poll_one(self, mt: Any) -> None:
        """One REST read a second, when the stream is up: a closed day's investor flows, else a polled code's price."""
        try:
            now = time.monotonic()
            stale = [c for c in self.codes if ((r := self.references.get(c)) is None or r.trading_date != mt.trading_date)
                     and now - self._reference_asked.get(c, -REFERENCE_RETRY_S) >= REFERENCE_RETRY_S]
            if stale and mt.known:  # the day's base prices and limits first: the risk guard measures against them
                self._read_reference(stale[0], mt)
            elif self._flows_due:
                code = self._flows_due.pop(0)
                days = [d for d in self.rest.investor(code) if d.date == self._flows_date]
                if days:
                    d = days[0]
                    self.feed.publish(flow_topic(code), InvestorFlow(
                        code=code, ts_ns=mt.ts_ns, foreign_net_qty=d.foreign_net_qty,
                        institution_net_qty=d.institution_net_qty, individual_net_qty=d.person_net_qty,
                        provisional=False, cumulative=True, trading_date=d.date))
                    self.counters["flows"] += 1
            elif mt.phase in (SessionPhase.OPEN, SessionPhase.PRE_OPEN, SessionPhase.CLOSING) and (
                    polled := [c for c in self.stream.describe()["polled"] if c in self.codes]):
                self._poll_turn += 1
                code = polled[self._poll_turn % len(polled)]
                q = self.rest.price(code)
                self.quotes.setdefault(code, {}).update(last=q.last, volume=q.volume)
                if q.last > 0:  # the last price, for marks and the board; no trade of its own (qty 0, no bar)
                    self.feed.publish(tick_topic(code), Tick(code=code, ts_ns=mt.ts_ns, price=q.last, qty=0,
                                                             cum_volume=q.volume))
                self.counters["polled"] += 1
        except (kis.KisUnavailable, kis.KisRateLimited, kis.KisBadReply, kis.KisRejected) as exc:
            self.counters["poll_failures"] += 1
            self.log.info("REST poll failed: %s", exc)

    def _on_state(self, ev: Any) -> None:
        old, new = str(ev.old), str(ev.new)
        self.stream_state = new
        if new != "connected":
            self.ready = False
        level = AlertLevel.INFO if new == "connected" else AlertLevel.WARNING
        if new == "blocked":
            level = AlertLevel.CRITICAL
        self.alert(level, ALERT_KIND, f"KIS stream {old} -> {new}: {ev.why}")
        if new == "connected":
            self._catch_up_due = 0.0

    # --- the timer ----------------------------------------------------------------

    def on_timer(self, now_monotonic: float) -> None:
        try:
            self._timer(now_monotonic)
        except Exception:  # a bad reply or a bug costs one round of the timer, never the process
            self.counters["timer_errors"] += 1
            self.log.exception("timer round failed; going on")

    def _timer(self, now_monotonic: float) -> None:
        self.book.wall_ns = time.monotonic_ns()
        problem = self.clock.poll()
        if problem:
            self.counters["clock_unread"] += 1
        mt = self.clock.now()
        self._session(mt)
        for bar in self.bars.flush(mt.ts_ns):
            self._publish_bar(bar)
        if now_monotonic >= self._catch_up_due and self.stream_state == "connected" and mt.known:
            self._timed_catch_up(mt.trading_date, now_monotonic)
        if now_monotonic >= self._next_poll and self.ready:
            self._next_poll = now_monotonic + POLL_INTERVAL_S
            self._poll_one(mt)
        gone = self.book.expire_buffer()
        if gone:
            self.log.warning("notices of unknown order number(s) %s dropped after waiting for their reply", gone)
        for kind, text in self.book.alerts:
            self.alert(AlertLevel.CRITICAL if kind == "kis_order_ambiguous" else AlertLevel.WARNING, kind, text)
        self.book.alerts.clear()
        if now_monotonic >= self._next_feed_hb and mt.known:
            self._next_feed_hb = now_monotonic + 1.0
            self._feed_heartbeat(mt)
        self._flush()

    def _timed_catch_up(self, trading_date: str, now_monotonic: float) -> None:
        try:
            self._catch_up(trading_date)
            if not self.ready:
                self._balance = None
                self._read_balance()
                self.ready = True
                self.alert(AlertLevel.INFO, ALERT_KIND, "KIS connected and caught up; orders go out again")
        except (kis.KisUnavailable, kis.KisRateLimited, kis.KisBadReply, kis.KisRejected) as exc:
            self.log.warning("catch-up with KIS failed: %s", exc)
            self._catch_up_due = now_monotonic + 1.0
            return
        busy = self.book.in_doubt()
        self._catch_up_due = now_monotonic + (IN_DOUBT_INTERVAL_S if busy else CATCH_UP_INTERVAL_S)

    def _session(self, mt: Any) -> None:
        if not mt.known:
            return
        key = (mt.phase, mt.trading_date)
        if key == self._last_phase:
            return
        self._last_phase = key
        self.log.info("session %s %s", mt.trading_date, mt.phase.value)
        self.feed.publish(SESSION_TOPIC, SessionEvent(phase=mt.phase, trading_date=mt.trading_date, ts_ns=mt.ts_ns,
                                                      clock_speed=mt.speed))
        if mt.phase is SessionPhase.CLOSED:
            for bar in self.bars.flush(mt.ts_ns + 60 * 1_000_000_000):
                self._publish_bar(bar)
            if self._flows_date != mt.trading_date:  # the day's investor flows: KIS has them after the close
                self._flows_date, self._flows_due = mt.trading_date, list(self.codes)

    def _feed_heartbeat(self, mt: Any) -> None:
        info: dict[str, object] = {"trading_date": mt.trading_date, "session": mt.phase.value,
                                   "market_ts_ns": mt.ts_ns, "venue": "kis", "ready": self.ready}
        info.update(self.feed.heartbeat_info())
        self.feed.publish(FEED_HEARTBEAT_TOPIC, Heartbeat(name=self.name, pid=os.getpid(), state=self.state,
                                                          ts_ns=time.time_ns(), last_seq=self.feed.last_seq,
                                                          info=info))
        self.feed.publish(SESSION_TOPIC, SessionEvent(phase=mt.phase, trading_date=mt.trading_date, ts_ns=mt.ts_ns,
                                                      clock_speed=mt.speed))
        now = time.monotonic()
        if now >= self._next_references:  # repeated, so that a late joiner learns them too
            self._next_references = now + REFERENCE_REPEAT_S
            for code, ref in self.references.items():
                if ref.trading_date == mt.trading_date:
                    self.feed.publish(reference_topic(code), ref)
            for code, fund in self.fundamentals.items():
                self.feed.publish(fundamentals_topic(code), fund)

    # --- output -------------------------------------------------------------------

    def _save(self) -> None:
        if self.book.dirty_fills:
            self._balance = None  # the account moved: the next account or positions query reads KIS again
        self.store.save(self.book)

    def _flush(self) -> None:
        if self._pending:
            out, self._pending = self._pending, []
            for topic, msg in out:
                self.feed.publish(topic, msg)

    def describe(self) -> dict[str, Any]:
        return {"env": self.env, "live": self.live, "account": mask_account(self.account), "ready": self.ready,
                "stream": self.stream.describe(), "orders_in_doubt": [o.client_order_id for o in self.book.in_doubt()],
                "reduce_only_codes": sorted(self.book.reduce_only_codes()), "counters": dict(self.counters),
                "rest": dict(getattr(self.rest, "counters", {}))}

    def heartbeat_info(self) -> dict[str, object]:
        stream = self.stream.describe() if hasattr(self, "stream") else {}
        return {"venue": "kis", "env": getattr(self, "env", ""), "live": getattr(self, "live", False),
                "ready": getattr(self, "ready", False), "stream": getattr(self, "stream_state", ""),
                "streamed": len(stream.get("streamed", []) or []), "polled": len(stream.get("polled", []) or []),
                "account": mask_account(getattr(self, "account", ""))}

    def teardown(self) -> None:
        stream = getattr(self, "stream", None)
        if stream is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._poller.unregister(stream.fileno())
            stream.stop()
        for name in ("rest", "clock", "store"):
            obj = getattr(self, name, None)
            close = getattr(obj, "close", None)
            if close is not None:
                close()


def _plain(obj: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    return asdict(obj) if is_dataclass(obj) else dict(getattr(obj, "__dict__", {}))


def main() -> NoReturn:
    """``python -m services.kis_gateway``: refuse to start on settings that would trade by mistake, else run."""
    configure_logging()
    try:
        settings = load_stack()
    except ConfigError as exc:
        log.error("%s", exc)
        sys.exit(EXIT_CONFIG)
    problems = start_problems(settings)
    if problems:
        for p in problems:
            log.error("refusing to start: %s", p)
        sys.exit(EXIT_CONFIG)
    sys.exit(KisGateway(NAME, settings).run())


def _levels(prices: tuple[int, ...], qtys: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """A side of an H0STASP0 record as price levels, best first, without its empty (0) levels."""
    pairs = [(int(p), int(q)) for p, q in zip(prices, qtys) if int(p) > 0]
    return [p for p, _ in pairs], [max(q, 0) for _, q in pairs]
