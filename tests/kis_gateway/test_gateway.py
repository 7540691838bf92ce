"""The KIS gateway as a real process between the firm's venue client and a real local KIS server.

Everything here goes through ``VenueBroker`` (the client the order manager and
the reconciler use) to a ``python -m services.kis_gateway`` process, which
talks REST and WebSocket to ``python -m services.kis_sim``.
"""

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

from core.config import load_stack
from core.messages import DayReference, Fill, Fundamentals, OrderEvent, OrderRequest, OrderStatus, Quote, Side, Tick
from services.broker.base import BrokerError
from services.broker.venue import VenueBroker
from services.kis_gateway.auth import TokenCache
from tests.kis_sim.conftest import Server

ROOT = Path(__file__).resolve().parents[2]
CODE = "005930"


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Gateway:
    """A gateway process on its own run directory, pointed at ``sim``."""

    def __init__(self, run_dir: Path, sim: Server, **env: str) -> None:
        self.run_dir = run_dir
        self.env = {**os.environ, "TRADER_RUN_DIR": str(run_dir), "TRADER_BROKER__KIND": "kis",
                    "TRADER_BROKER__KIS__REST_URL": sim.base, "TRADER_BROKER__KIS__WS_URL": sim.ws_url,
                    "TRADER_BROKER__KIS__RATE_PER_S": "200", "TRADER_BROKER__KIS__ORDER_TIMEOUT_S": "3",
                    "TRADER_MARKET__CODES": '["005930", "000660"]',  # a few registrations: ready sooner
                    "PYTHONUNBUFFERED": "1", **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = run_dir / "kis-gateway.log"

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "services.kis_gateway"], cwd=ROOT, env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def settings(self) -> Any:
        saved = dict(os.environ)
        try:
            os.environ.update({k: v for k, v in self.env.items() if k.startswith("TRADER_")})
            return load_stack()
        finally:
            os.environ.clear()
            os.environ.update(saved)


def _serve(gw: Gateway, sim: Server) -> Iterator[tuple[Gateway, VenueBroker, Server]]:
    """Start ``gw``, wait until it is ready, hand it out with a client; stop both afterwards."""
    gw.start()
    ctx = zmq.Context()
    client = VenueBroker(ctx, gw.settings(), timeout_ms=4000, retries=0, sender="test")
    try:
        wait_for("the gateway ready", lambda: _ping(client).get("ready"), 30)
        yield gw, client, sim
    finally:
        client.close()
        ctx.term()
        gw.stop()


@pytest.fixture
def venue(tmp_path: Path, sim: Server) -> Iterator[tuple[Gateway, VenueBroker, Server]]:
    yield from _serve(Gateway(tmp_path / "run", sim), sim)


def _ping(client: VenueBroker) -> dict[str, Any]:
    try:
        return client.ping()
    except Exception:  # noqa: BLE001 - not up yet
        return {}


def order(n: int, side: str = "buy", qty: int = 3, price: int = 0) -> OrderRequest:
    kind = "limit" if price else "market"
    return OrderRequest(client_order_id=f"kt-20260101-{n}", agent_id="kt", code=CODE, side=Side(side),
                        order_type=kind, qty=qty, price=price)


class Notices:
    """The gateway's execution notices, as the order manager subscribes to them."""

    def __init__(self, client: VenueBroker) -> None:
        self.sub = client.subscribe_notices()
        self.fills: list[Fill] = []
        self.events: list[OrderEvent] = []

    def pump(self) -> None:
        for env in self.sub.drain(1000):
            if isinstance(env.msg, Fill):
                self.fills.append(env.msg)
            elif isinstance(env.msg, OrderEvent):
                self.events.append(env.msg)

    def fills_of(self, coid: str) -> list[Fill]:
        self.pump()
        return [f for f in self.fills if f.client_order_id == coid]


def test_an_order_through_the_gateway_is_accepted_filled_once_and_told_alike_by_notice_and_query(venue) -> None:
    gw, client, sim = venue
    notices = Notices(client)
    time.sleep(0.3)  # the SUB socket's subscription reaches the PUB (ZeroMQ's slow joiner)
    reply = client.place(order(1))
    assert reply.status in (OrderStatus.ACCEPTED, OrderStatus.FILLED), reply
    assert reply.broker_order_id
    fills = wait_for("the fill notice", lambda: notices.fills_of("kt-20260101-1"))
    assert sum(f.qty for f in fills) == 3 and all(f.broker_order_id == reply.broker_order_id for f in fills)
    # the query tells the same fills with the same execution ids
    queried = [f for f in client.fills_today() if f.client_order_id == "kt-20260101-1"]
    assert {f.exec_id for f in queried} == {f.exec_id for f in fills}
    assert client.order_status("kt-20260101-1").status is OrderStatus.FILLED
    # the same order again is its record, not a second order at KIS
    again = client.place(order(1))
    assert again.broker_order_id == reply.broker_order_id
    assert sim.control("status")["orders_today"] == 1
    held = client.positions()
    assert held[CODE]["qty"] >= 3


def test_an_order_whose_reply_is_lost_is_never_sent_again_and_is_found_in_the_daily_orders(venue) -> None:
    gw, client, sim = venue
    sim.fault("order-timeout", count=1)
    reply = client.place(order(2))
    assert reply.status is OrderStatus.SUBMITTED and not reply.broker_order_id  # fate unknown, not refused
    found = wait_for("the order found at KIS", lambda: (client.order_status("kt-20260101-2").broker_order_id or None))
    assert found
    assert sim.control("status")["orders_today"] == 1
    sim.fault("order-drop", count=1)
    assert client.place(order(3)).status is OrderStatus.SUBMITTED
    wait_for("the dropped order found", lambda: client.order_status("kt-20260101-3").broker_order_id)
    assert sim.control("status")["orders_today"] == 2


def test_a_notice_that_beats_the_reply_and_duplicated_notices_make_one_fill(venue) -> None:
    gw, client, sim = venue
    notices = Notices(client)
    time.sleep(0.3)
    sim.fault("notice-first")
    sim.fault("duplicate-notices")
    client.place(order(4, qty=5))
    fills = wait_for("the fill", lambda: notices.fills_of("kt-20260101-4"))
    time.sleep(0.5)  # any duplicate would have arrived by now
    fills = notices.fills_of("kt-20260101-4")
    assert sum(f.qty for f in fills) == 5 and len({f.exec_id for f in fills}) == len(fills)


def test_a_resting_order_is_canceled_and_an_unknown_order_refused(venue) -> None:
    gw, client, sim = venue
    quote = wait_for("a price", lambda: client.quote(CODE).get("lower_limit"))
    reply = client.place(order(5, qty=2, price=quote))  # at the lower limit: rests
    assert reply.status is OrderStatus.ACCEPTED
    time.sleep(0.15)  # kis-sim refuses a cancel sooner than 100 ms after its order (as KIS does)
    from core.messages import CancelRequest

    done = client.cancel(CancelRequest(client_order_id="kt-20260101-5", agent_id="kt"))
    assert done.status is OrderStatus.CANCELED
    assert client.order_status("kt-20260101-5").status is OrderStatus.CANCELED
    with pytest.raises(BrokerError) as err:
        client.cancel(CancelRequest(client_order_id="kt-20260101-99", agent_id="kt"))
    assert err.value.reason_code == "UNKNOWN_ORDER"


def test_while_the_stream_is_down_orders_are_refused_and_afterwards_the_missed_fills_arrive(venue) -> None:
    gw, client, sim = venue
    sim.fault("drop-ws", abort=True)
    refused = wait_for("a refusal while reconnecting", lambda: (
        (r := client.place(order(int(time.monotonic() * 1000) % 1_000_000 + 100))).status is OrderStatus.REJECTED
        and r.reason_code == "BROKER_DISCONNECTED"), 10)
    assert refused
    wait_for("ready again", lambda: _ping(client).get("ready"), 40)
    assert client.place(order(6)).status in (OrderStatus.ACCEPTED, OrderStatus.FILLED)


def test_the_feed_carries_ticks_and_the_heartbeat(venue) -> None:
    gw, client, sim = venue
    sub = client.subscribe_market([CODE])
    seen: list[Any] = []

    def got(kind: type) -> list[Any]:
        seen.extend(e.msg for e in sub.drain(100))
        return [m for m in seen if isinstance(m, kind)]

    ticks = wait_for("ticks", lambda: got(Tick), 30)
    assert ticks[0].code == CODE and ticks[0].price > 0
    # the day's base price and limits, as KIS's inquire-price has them, for the risk guard and the Market page
    ref = wait_for("the day's reference", lambda: got(DayReference), 30)[0]
    kis = sim.price(CODE)
    assert (ref.code, ref.base_price, ref.lower_limit, ref.upper_limit) == (
        CODE, int(kis["stck_sdpr"]), int(kis["stck_llam"]), int(kis["stck_mxpr"]))
    assert ref.trading_date == sim.control("status")["trading_date"]
    quote = client.quote(CODE)  # the venue protocol's quote, in the paper exchange's keys
    assert (quote["base_price"], quote["lower_limit"], quote["upper_limit"]) == (
        ref.base_price, ref.lower_limit, ref.upper_limit)
    assert quote["last"] > 0 and quote["tick_size"] > 0
    # EPS and BPS from the same inquire-price, as md.fund (DPS the instrument master's: KIS has none there)
    fund = wait_for("the fundamentals", lambda: got(Fundamentals), 30)[0]
    assert (fund.code, fund.source, fund.eps, fund.bps) == (CODE, "kis", round(float(kis["eps"])), round(float(kis["bps"])))
    assert fund.effective_date == ref.trading_date
    # KIS's ten-level book (H0STASP0) as md.quote: best first, the bid below the ask
    book = wait_for("the book", lambda: got(Quote), 30)[-1]
    assert book.code == CODE and book.bid_px and book.ask_px and book.bid_px[0] < book.ask_px[0]
    assert book.bid_px == sorted(book.bid_px, reverse=True) and book.ask_px == sorted(book.ask_px)


def test_the_gateway_refuses_to_start_on_the_paper_stack_or_real_money_without_the_live_switch(tmp_path: Path,
                                                                                             sim: Server) -> None:
    for env, needle in (({"TRADER_BROKER__KIND": "paper"}, "paper exchange is this stack's venue"),
                        ({"TRADER_BROKER__KIS__ENV": "real"}, "TRADER_LIVE=yes")):
        gw = Gateway(tmp_path / f"run-{len(needle)}", sim, **env)
        gw.start()
        assert gw.proc is not None
        assert gw.proc.wait(30) == 2
        assert needle in gw.log.read_text()


@pytest.fixture
def venue_a_minute_old(tmp_path: Path, sim: Server) -> Iterator[tuple[Gateway, VenueBroker, Server]]:
    """A gateway whose access token was issued over a minute ago, as on any trading day after its first minute.

    The token is issued through the gateway's own token cache on a clock a minute
    behind, and kis-sim's auth clock is moved on the same minute, so both KIS and
    the gateway see the last issuance as over a minute old.
    """
    gw = Gateway(tmp_path / "run", sim)
    cache = TokenCache(tmp_path / "run" / "kis-gateway" / "tokens.json", sim.base, sim.creds["appkey"],
                       sim.creds["appsecret"], clock=lambda: time.time() - 61)
    try:
        cache.token()
    finally:
        cache.close()
    sim.control("auth-clock", {"advance_s": 61})
    yield from _serve(gw, sim)


def test_the_weekly_restart_is_survived_and_trading_resumes_once_a_new_token_may_be_issued(
        venue_a_minute_old) -> None:
    gw, client, sim = venue_a_minute_old
    assert not client.command("status")["rest"].get("token_issued")  # the gateway started on the cached token
    sim.fault("weekly-restart", seconds=1)  # sessions closed, tokens and approval keys revoked, REST silent 1 s
    wait_for("the gateway to notice", lambda: not _ping(client).get("ready", True), 20)
    # while it cannot trade, an order is refused as not sent, never left in doubt or sent twice
    refused = client.place(order(7))
    assert refused.status is OrderStatus.REJECTED and refused.reason_code == "BROKER_DISCONNECTED"
    # KIS issues one token a minute: the gateway asks again when that allows, then catches up and trades
    wait_for("ready again", lambda: _ping(client).get("ready"), 60)
    assert client.place(order(8)).status in (OrderStatus.ACCEPTED, OrderStatus.FILLED)
    assert sim.control("status")["orders_today"] == 1
    # the cached token served until the restart revoked it; then one new token, at once
    assert client.command("status")["rest"].get("token_issued") == 1


def test_at_kis_rate_limit_an_order_is_refused_or_placed_once_never_twice(venue) -> None:
    gw, client, sim = venue
    sim.control("settings", {"rate_limit_per_s": 2})
    replies = [client.place(order(20 + i)) for i in range(6)]
    placed = [r for r in replies if r.broker_order_id]
    refused = [r for r in replies if r.status is OrderStatus.REJECTED]
    assert len(placed) + len(refused) == 6
    assert all(r.reason_code in ("RATE_LIMIT_EXCEEDED", "RATE_LIMITED") for r in refused)
    assert sim.control("status")["orders_today"] == len(placed)


def test_codes_beyond_the_registrations_are_polled_by_rest(tmp_path: Path, sim: Server) -> None:
    gw = Gateway(tmp_path / "run", sim, TRADER_BROKER__KIS__MAX_REGISTRATIONS="3",
                 TRADER_MARKET__CODES='["005930", "000660", "035420", "005380"]')
    gw.start()
    ctx = zmq.Context()
    client = VenueBroker(ctx, gw.settings(), timeout_ms=4000, retries=0, sender="test")
    try:
        wait_for("ready", lambda: _ping(client).get("ready"), 30)
        status = wait_for("the registrations", lambda: (st := client.command("status")["stream"])["streamed"]
                          and st["counters"].get("acks", 0) >= 3 and st)
        assert len(status["streamed"]) == 2 and len(status["polled"]) == 2  # notices + 2 codes' ticks = 3
        polled = status["polled"][0]
        sub = client.subscribe_market([polled])
        marks = wait_for("a polled price", lambda: [e.msg for e in sub.drain(100)
                                                    if isinstance(e.msg, Tick) and e.msg.code == polled], 30)
        assert marks[0].qty == 0 and marks[0].price > 0
    finally:
        client.close()
        ctx.term()
        gw.stop()


def test_an_order_that_cannot_be_told_apart_is_flagged_reduce_only_and_settled_with_trader_kis_adopt(venue) -> None:
    gw, client, sim = venue
    price = wait_for("a price", lambda: client.quote(CODE).get("lower_limit"))
    # the owner's own order at KIS (from HTS), the same as the firm's next one
    own = sim.order("buy", qty=2, price=price)
    assert own.status_code == 200, own.text
    sim.fault("order-drop", count=1)
    assert client.place(order(30, qty=2, price=price)).status is OrderStatus.SUBMITTED
    status = wait_for("the order flagged", lambda: (st := client.command("status"))["reduce_only_codes"] and st, 30)
    assert status["orders_in_doubt"] == ["kt-20260101-30"]
    refused = client.place(order(31, qty=1, price=price))
    assert refused.status is OrderStatus.REJECTED and refused.reason_code == "REDUCE_ONLY_UNRESOLVED_ORDER"
    shown = subprocess.run([str(Path(sys.executable).parent / "trader"), "kis", "status", "--json"], cwd=ROOT,
                           env=gw.env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "kt-20260101-30" in shown.stdout, shown.stderr
    rows = [o for o in client.orders_today() if o.client_order_id.startswith("HTS-")]
    assert len(rows) == 2  # both KIS orders are the owner's as far as the firm knows
    odno = rows[-1].broker_order_id
    done = subprocess.run([str(Path(sys.executable).parent / "trader"), "kis", "adopt", "kt-20260101-30", odno],
                          cwd=ROOT, env=gw.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert client.order_status("kt-20260101-30").broker_order_id == odno
    assert client.command("status")["reduce_only_codes"] == []


@pytest.fixture
def venue_keeping_readings(tmp_path: Path, sim: Server) -> Iterator[tuple[Gateway, VenueBroker, Server]]:
    """A gateway that answers account queries from readings up to ten minutes old (unless asked fresh)."""
    yield from _serve(Gateway(tmp_path / "run", sim, TRADER_BROKER__KIS__BALANCE_MAX_AGE_S="600",
                              TRADER_BROKER__KIS__DAILY_MAX_AGE_S="600"), sim)


def test_a_fresh_account_query_reads_kis_anew_where_a_plain_one_is_answered_from_the_kept_reading(
        venue_keeping_readings) -> None:
    gw, client, sim = venue_keeping_readings
    cash, held = client.account()["cash_won"], client.positions().get("000660", {}).get("qty", 0)
    client.fills_today()  # the day's orders read once, and kept
    sim.fault("phantom", code="000660", qty=3, cash_won=-12345)  # KIS's balance moves with no notice
    assert client.account()["cash_won"] == cash and client.positions().get("000660", {}).get("qty", 0) == held
    assert client.account(fresh=True)["cash_won"] == cash - 12345
    assert client.positions()["000660"]["qty"] == held + 3  # from the fresh reading
    assert client.fills_today(fresh=True) == client.fills_today()  # the day's orders read anew: no fill yet
    with pytest.raises(BrokerError) as err:
        client.command("account", {"fresh": "yes"})
    assert err.value.reason_code == "BAD_ARGS" and "fresh" in str(err.value)
