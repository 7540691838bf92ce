"""The local KIS server process: REST (uvicorn) and WebSocket (``websockets``) on loopback, and the market loop.

The shell around the pure parts: ``KisMarket`` (the paper world), ``OrderDesk``
(KIS orders), ``TokenBook`` (auth), ``SlidingWindow`` (rate limit),
``inquiries`` (query TRs), ``Stream`` (real-time sessions) and ``Faults``. One
asyncio loop runs all three servers, so a request sees the market between two
market steps and never half-way through one. State is saved to
``<state>/kis_sim.sqlite`` before a reply that reports a change leaves, so a
restart (even after kill -9) loses and repeats nothing; start-up is the same
path with or without saved state (crash-only).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import secrets
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from core.config import PROJECT_ROOT, load_stack
from core.instruments import Instrument, load_instruments
from core.krx import KST
from core.matching import MatchingEngine
from core.messages import SessionPhase
from services.exchange.clock import first_market_day
from services.kis_sim import frames
from services.kis_sim.auth import AuthRules, TokenBook
from services.kis_sim.credentials import credentials
from services.kis_sim.faults import FaultError, Faults, Phantom
from services.kis_sim.flavour import BOOK_TR, FLAVOURS, TICK_TR
from services.kis_sim.market import CodeDay, KisMarket, Step, Trade
from services.kis_sim.notices import Notice, record
from services.kis_sim.options import SimOptions
from services.kis_sim.orders import ACCOUNT_ID, DeskRules, OrderDesk
from services.kis_sim.ratelimit import SlidingWindow
from services.kis_sim.replies import KisError
from services.kis_sim.store import KisSimStore
from services.kis_sim.stream import PongAwareConnection, Stream, StreamRules

STATE_VERSION = 1
LOOP_BUSY_S = 0.02
LOOP_IDLE_S = 0.25
MARKET_SAVE_INTERVAL_S = 1.0
_log = logging.getLogger("kis_sim")


class KisSim:
    """Everything one server holds, and the operations its REST and WebSocket front ends call."""

    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self.flavour = FLAVOURS[options.env]
        self.creds = credentials(options.env, options.appkey, options.appsecret, options.account, options.hts_id)
        stack = load_stack()
        self.instruments = self._instruments(stack.market.instruments_file, stack.market.codes)
        state_dir = options.state or Path(tempfile.mkdtemp(prefix="kis-sim-"))
        self.store = KisSimStore(state_dir)
        saved_market, order_rows, meta = self.store.load()
        self.auth_offset_s = 0.0
        signing = bytes.fromhex(meta["signing_key"]) if "signing_key" in meta else secrets.token_bytes(64)
        self._signing_hex = signing.hex()
        self.book = TokenBook(self.creds, signing, AuthRules(token_error_status=options.token_error_status,
                                                             keep_old_tokens=options.keep_old_tokens))
        self.book.restore(meta.get("auth", {}), self.auth_now())
        self.limiter = SlidingWindow(options.rate_limit_per_s or self.flavour.rest_rate_per_s)
        self.faults = Faults(seed=options.seed)
        wall_ns = time.monotonic_ns()
        cash = options.cash_won or stack.broker.account_cash_won
        if saved_market is not None:
            engine = MatchingEngine.from_state(saved_market["engine"], self.instruments)
            self.market, first = KisMarket.resume(
                self.instruments, engine, seed=saved_market["seed"],
                first_day=dt.date.fromisoformat(saved_market["first_day"]),
                days_simulated=int(saved_market["days_simulated"]), market_ns=int(saved_market["market_ns"]),
                speed=options.speed, wall_ns=wall_ns, trades_per_print=options.trades_per_print)
            self.market.flow_history.update(saved_market.get("flow_history", {}))
        else:
            engine = MatchingEngine(self.instruments)
            engine.open_account(ACCOUNT_ID, cash)
            first_day = first_market_day(options.start_date or stack.clock.start_date, dt.datetime.now(KST).date())
            self.market, first = KisMarket.open(
                self.instruments, engine, seed=options.seed, first_day=first_day,
                start_time=options.start_time or stack.clock.start_time, speed=options.speed, wall_ns=wall_ns,
                trades_per_print=options.trades_per_print)
        self.desk = OrderDesk(engine, self.instruments, self.flavour, self.creds.cano, self.creds.product_code,
                              DeskRules(cancel_guard_s=options.cancel_guard_ms / 1000,
                                        accept_empty_branch=options.accept_empty_branch,
                                        unpadded_odno=options.unpadded_odno))
        self.desk.restore(order_rows, int(meta.get("next_odno", 1)), meta.get("sold_out", {}))
        self.stream = Stream(self.book, self.flavour, self.creds,
                             StreamRules(ping_interval_s=options.ping_interval_s, pong_timeout_s=options.pong_timeout_s,
                                         max_requests_per_s=options.ws_max_requests_per_s,
                                         tick_fields=options.tick_fields, book_fields=options.book_fields,
                                         key_per_subscription=options.key_per_subscription),
                             self.auth_now, set(self.instruments))
        self.stream.on_subscriptions_changed = self._subscriptions_changed
        self.market.recorder = self._tick_record
        self._book_codes: set[str] = set()
        self._last_market_save = 0.0
        self.store.save_market(self._service_state(), engine, everything=True)
        self.save_kis()
        self._after(first)

    @staticmethod
    def _instruments(path_text: str, codes: list[str]) -> dict[str, Instrument]:
        path = Path(path_text)
        if not path.is_absolute() and not path.exists():
            path = PROJECT_ROOT / path
        master = load_instruments(path)
        return {c: master[c] for c in (codes or list(master)) if c in master}

    # --- clocks --------------------------------------------------------------------------

    def auth_now(self) -> float:
        """The gateway's wall clock (tokens live in real time), moved on by ``/kis-sim/auth-clock``."""
        return time.time() + self.auth_offset_s

    def advance_auth_clock(self, body: dict[str, Any]) -> dict[str, Any]:
        seconds = body.get("advance_s")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError("advance_s must be a number of seconds >= 0")
        self.auth_offset_s += float(seconds)
        return {"auth_offset_s": self.auth_offset_s}

    def settings(self, body: dict[str, Any]) -> dict[str, Any]:
        rate = body.get("rate_limit_per_s")
        if rate is not None:
            if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
                raise ValueError("rate_limit_per_s must be a whole number >= 1")
            self.limiter.per_second = rate
        return {"rate_limit_per_s": self.limiter.per_second}

    # --- orders ----------------------------------------------------------------------------

    def order(self, action: str, body: dict[str, Any]) -> tuple[str, dict[str, str], list[Notice]]:
        """Carry out an order-cash or order-rvsecncl request and save it; raises KisError on refusal."""
        market, desk = self.market, self.desk
        # the order meets, and is stamped with, the market of now; what that step did is saved with the order
        earlier = self._after(market.advance(time.monotonic_ns()), save=False)
        now_ns, wall = market.now_ns, time.monotonic()
        before_open = market.phase is SessionPhase.CLOSED and now_ns < market.venue.pre_open_ns
        if action == "change":
            what, output, notices = desk.change(body, now_ns, wall, market.trading_date)
        else:
            what = action
            output, notices = desk.place(action, body, now_ns, wall, market.trading_date, before_open)
        desk.note_desk_fills(market.trading_date)
        self._save(markets=False)
        return what, output, earlier + notices

    def send_notices(self, notices: list[Notice], *, wait: bool = False) -> list[asyncio.Future[None]]:
        if not notices:
            return []
        opts = self.options
        records = [record(n, hts_id=self.creds.hts_id, account=self.creds.account, branch=self.flavour.branch,
                          account_name="모의투자" if self.flavour.is_demo else "실전투자", fields=opts.notice_fields)
                   for n in notices]
        if self.faults.duplicate_notices:
            records = [r for r in records for _ in (0, 1)]
        return self.stream.publish_notices(records, wait=wait)

    # --- faults -----------------------------------------------------------------------------------

    async def fault(self, body: dict[str, Any]) -> dict[str, Any]:
        result = self.faults.apply(body, time.monotonic())
        for action in result["actions"]:
            if action == "revoke":
                result["revoked_tokens"] = self.book.revoke_all()
                self.save_kis()
            elif action == "phantom":
                result["phantom"] = self._phantom(result["phantom"])
            else:
                result["dropped_sessions"] = await self.stream.drop_all(abort=action == "drop_ws_abort")
        _log.warning("fault injected: %s", body)
        return result

    def _phantom(self, change: Phantom) -> dict[str, Any]:
        """Change the account without a fill (``faults.Phantom``), saved before the reply; the holding and cash now."""
        engine = self.market.engine
        try:
            engine.adjust_account(ACCOUNT_ID, change.code, change.qty, change.cash_won)
        except ValueError as exc:
            raise FaultError(f"phantom: {exc}") from exc
        self.store.save_market(self._service_state(), engine, markets=False)
        held = engine.positions(ACCOUNT_ID).get(change.code)
        account = engine.account(ACCOUNT_ID)
        assert account is not None
        return {"code": change.code, "qty": held.qty if held else 0, "cash_won": account.cash_won}

    def status(self) -> dict[str, Any]:
        m = self.market
        return {
            "env": self.flavour.name, "trading_date": m.trading_date, "session": m.phase.value,
            "market_time": dt.datetime.fromtimestamp(m.now_ns / 1e9, KST).isoformat(), "clock_speed": m.clock.speed,
            "orders_today": sum(1 for o in self.desk.orders.values() if o.ord_dt == m.trading_date),
            "rate_limit_per_s": self.limiter.per_second, "rate_limited": self.limiter.refused,
            "faults": self.faults.describe(time.monotonic()), "stream": self.stream.describe(),
            "auth_offset_s": self.auth_offset_s,
        }

    # --- the market loop -----------------------------------------------------------------------

    def _subscriptions_changed(self) -> None:
        self.market.wanted = self.stream.wanted(TICK_TR)
        self._book_codes = self.stream.wanted(BOOK_TR)

    def _tick_record(self, cd: CodeDay, t: Trade) -> str:
        asks, bids, ask_qty, bid_qty = self.market.book_levels(cd.code, 1)
        return frames.tick_record(cd, t, self.instruments[cd.code], self.market.trading_date, asks[0], bids[0],
                                  ask_qty[0], bid_qty[0], self.options.tick_fields)

    def step(self) -> float:
        """Advance the market to now, send what happened, save; the seconds until the next step is due."""
        market = self.market
        out = market.advance(time.monotonic_ns())
        self._after(out)
        wall_until = market.wall_s_until_next_event()
        return LOOP_BUSY_S if wall_until < LOOP_IDLE_S else min(LOOP_IDLE_S, wall_until)

    def _after(self, out: Step, *, save: bool = True) -> list[Notice]:
        """Send what a market step did; with ``save`` saved first, else its notices are returned unsent."""
        market = self.market
        notices = self.desk.apply_market(out.fills, out.order_events, market.now_ns, market.trading_date)
        if out.trades:
            ticks: dict[str, list[str]] = {}
            for t in out.trades:
                if t.record:
                    ticks.setdefault(t.code, []).append(t.record)
            self.stream.publish_records(TICK_TR, ticks)
            books = {t.code for t in out.trades} & self._book_codes
            if books:
                self.stream.publish_records(BOOK_TR, {
                    c: [frames.book_record(market, c, market.now_ns, self.options.book_fields)] for c in books})
        now = time.monotonic()
        if out.new_day:
            self.desk.forget_before(market.trading_date)
        if not save:
            return notices
        if self.desk.dirty or out.new_day or market.venue.changed \
                or now - self._last_market_save >= MARKET_SAVE_INTERVAL_S:
            self._save()  # what the notices tell is saved before they leave, as a broker's record is
            market.venue.changed = False
            self._last_market_save = now
        self.send_notices(notices)
        return []

    def _service_state(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, **self.market.service_state()}

    def _meta(self) -> dict[str, Any]:
        return {"signing_key": self._signing_hex, "next_odno": self.desk.next_no, "sold_out": self.desk.sold_out,
                "auth": self.book.to_state(), "env": self.flavour.name}

    def save_kis(self) -> None:
        self.store.save_kis(self.desk.take_dirty(), self._meta())

    def _save(self, *, markets: bool = True) -> None:
        """The KIS records and the market in one transaction."""
        self.store.save(self.desk.take_dirty(), self._meta(), self._service_state(), self.market.engine,
                        markets=markets)

    def close(self) -> None:
        self.save_kis()
        self.store.save_market(self._service_state(), self.market.engine)
        self.store.close()


async def serve(options: SimOptions) -> None:
    """Run the server until SIGINT / SIGTERM."""
    import uvicorn
    from websockets.asyncio.server import serve as ws_serve

    from services.kis_sim.rest import DroppableH11Protocol, make_app

    sim = KisSim(options)
    stop = asyncio.Event()

    async def market_loop() -> None:
        while not stop.is_set():
            delay = sim.step()
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except asyncio.TimeoutError:
                pass

    ws_server = await ws_serve(sim.stream.handle, "127.0.0.1", options.ws_port, ping_interval=None,
                               max_size=64 * 1024, create_connection=PongAwareConnection)
    config = uvicorn.Config(make_app(sim), host="127.0.0.1", port=options.rest_port, http=DroppableH11Protocol,
                            lifespan="off", log_level="warning", access_log=False, ws="none")
    server = uvicorn.Server(config)
    rest_socket = config.bind_socket()  # listening before the ready line, so that line can be waited for
    # accepted connections inherit it: without, a reply waits on Nagle's algorithm and the peer's delayed ACK
    rest_socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    market = asyncio.create_task(market_loop())
    print(f"kis-sim {sim.flavour.name} ready: REST http://127.0.0.1:{options.rest_port} "
          f"WebSocket ws://127.0.0.1:{options.ws_port} pid {os.getpid()}", flush=True)
    try:
        await server.serve(sockets=[rest_socket])  # until SIGINT / SIGTERM (uvicorn's own handlers)
    finally:
        stop.set()
        await market
        ws_server.close()
        sim.close()


def run(options: SimOptions) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        asyncio.run(serve(options))
    except KisError as exc:  # pragma: no cover - start-up refusals are ValueErrors
        raise SystemExit(str(exc)) from exc
