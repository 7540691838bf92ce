"""The paper exchange as a real process: orders, queries, notices, faults, restart and the trading day."""

from __future__ import annotations

import json
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

from bus.codec import decode, encode
from bus.rpc import RpcClient, RpcError, RpcFailure
from core.config import PROJECT_ROOT, StackSettings, load_stack
from bus.pubsub import Subscriber
from core import krx
from core.messages import (
    CancelRequest,
    Command,
    CommandResult,
    DayReference,
    OrderRequest,
    OrderStatus,
    SessionEvent,
    SessionPhase,
)
from services.broker.base import BrokerError, BrokerUnavailable, ConnectionState
from services.broker.venue import VenueBroker

START_TIMEOUT_S = 30.0


def wait_for(condition: Callable[[], Any], timeout_s: float = 10.0, what: str = "condition") -> Any:
    """Poll until ``condition()`` is truthy; fail naming ``what`` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Exchange:
    """One exchange process under test, with a broker client for it."""

    def __init__(self, run_dir: Path, env: dict[str, str]) -> None:
        self.run_dir = run_dir
        self.env = {**os.environ, "TRADER_RUN_DIR": str(run_dir), **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.ctx = zmq.Context()
        self.settings = self._settings()
        self.broker = VenueBroker(self.ctx, self.settings, timeout_ms=2000, retries=1)

    def _settings(self) -> StackSettings:
        saved = {k: os.environ.get(k) for k in self.env if k.startswith("TRADER_")}
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("TRADER_")})
        try:
            return load_stack()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def start(self) -> None:
        log = open(self.run_dir / "exchange.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "services.exchange"], cwd=PROJECT_ROOT,
                                     env=self.env, stdout=log, stderr=log)
        log.close()

        def answers() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log_text()
            try:
                self.broker.ping()
                return True
            except BrokerUnavailable:
                return False

        wait_for(answers, START_TIMEOUT_S, "the exchange to answer")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def close(self) -> None:
        self.stop()
        self.broker.close()
        self.ctx.destroy(linger=0)

    def log_text(self) -> str:
        path = self.run_dir / "exchange.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    """An exchange in continuous trading (10:00 KST, clock x60)."""
    ex = Exchange(tmp_path_factory.mktemp("exchange"), {"TRADER_CLOCK__SPEED": "60", "TRADER_CLOCK__START_TIME": "10:00",
                                                        "TRADER_CLOCK__START_DATE": "2026-03-03"})
    try:
        ex.start()
        yield ex
    finally:
        ex.close()


@pytest.fixture
def fresh_exchange(tmp_path: Path) -> Iterator[Callable[..., Exchange]]:
    """A factory of exchanges with their own run directory, every one stopped at the end."""
    made: list[Exchange] = []

    def make(**env: str) -> Exchange:
        ex = Exchange(tmp_path, {"TRADER_CLOCK__START_DATE": "2026-03-03", **env})
        made.append(ex)
        ex.start()
        return ex

    try:
        yield make
    finally:
        for ex in made:
            ex.close()


_n = iter(range(1, 1_000_000))


def order(code: str = "005930", side: str = "buy", qty: int = 10, price: int = 0, **kw: Any) -> OrderRequest:
    return OrderRequest(client_order_id=f"t1-20260303-{next(_n)}-{os.getpid()}", agent_id="t1", code=code,
                        side=side, qty=qty, price=price, **kw)


def notices_for(sub: Any, client_order_id: str, timeout_s: float = 5.0, want: int = 1) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(got) < want:
        env = sub.recv(100)
        if env is not None and getattr(env.msg, "client_order_id", None) == client_order_id:
            got.append(env)
    return got


def test_place_query_and_cancel_a_resting_order(exchange: Exchange) -> None:
    b = exchange.broker
    q = b.quote("005930")
    req = order(price=q["lower_limit"])
    ev = b.place(req)
    assert ev.status is OrderStatus.ACCEPTED and ev.broker_order_id
    assert b.connection_state is ConnectionState.CONNECTED
    assert [o.client_order_id for o in b.open_orders()].count(req.client_order_id) == 1
    assert b.order_status(req.client_order_id) == b.place(req)  # a repeat is the same order, not a second
    assert sum(o.client_order_id == req.client_order_id for o in b.orders_today()) == 1
    assert b.account()["cash_on_hold_won"] > 0
    part = b.cancel(CancelRequest(client_order_id=req.client_order_id, agent_id="t1", qty=4))
    assert part.remaining_qty == 6
    too_many = b.cancel(CancelRequest(client_order_id=req.client_order_id, agent_id="t1", qty=7))
    assert (too_many.status, too_many.reason_code) == (OrderStatus.REJECTED, "CANCEL_QTY_EXCEEDS_REMAINING")
    done = b.cancel(CancelRequest(client_order_id=req.client_order_id, agent_id="t1"))
    assert done.status is OrderStatus.CANCELED
    again = b.cancel(CancelRequest(client_order_id=req.client_order_id, agent_id="t1"))
    assert again.reason_code == "ORDER_NOT_OPEN"
    with pytest.raises(BrokerError) as err:
        b.cancel(CancelRequest(client_order_id="nobody-20260303-1", agent_id="t1"))
    assert err.value.reason_code == "UNKNOWN_ORDER"
    assert b.order_status("nobody-20260303-1") is None


def test_marketable_order_fills_and_the_notices_arrive(exchange: Exchange) -> None:
    b = exchange.broker
    sub = b.subscribe_notices()
    time.sleep(0.3)  # let the subscription reach the publisher (a PUB drops what no one subscribed to yet)
    before = b.account()
    q = b.quote("000660")
    req = order(code="000660", qty=5, price=q["last"] + 3 * q["tick_size"])
    ev = b.place(req)
    assert ev.status in (OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED)
    got = notices_for(sub, req.client_order_id, want=2)
    topics = [e.topic for e in got]
    assert "exec.fill" in topics
    fills = [f for f in b.fills_today() if f.client_order_id == req.client_order_id]
    spent = sum(f.qty * f.price + f.fee_won for f in fills)
    assert fills and all(f.exec_id and f.fee_won > 0 for f in fills)
    assert before["cash_won"] - b.account()["cash_won"] == spent
    assert b.positions()["000660"]["qty"] >= sum(f.qty for f in fills)
    sub.close()


def test_refused_orders_carry_reason_codes(exchange: Exchange) -> None:
    b = exchange.broker
    q = b.quote("005930")
    cases = {
        "BAD_TICK": order(price=q["last"] + q["tick_size"] // 2),
        "OUTSIDE_PRICE_LIMITS": order(price=q["upper_limit"] + q["tick_size"]),
        "UNKNOWN_CODE": order(code="999990", price=1000),
        "INSUFFICIENT_SHARES": order(code="035720", side="sell", qty=10, price=b.quote("035720")["last"]),
        "INSUFFICIENT_CASH": order(qty=1_000_000, price=q["lower_limit"]),
    }
    for reason, req in cases.items():
        ev = b.place(req)
        assert (ev.status, ev.reason_code) == (OrderStatus.REJECTED, reason), ev
        assert ev.reason_text
        assert b.order_status(req.client_order_id) == ev


def test_malformed_requests_get_error_replies_and_the_exchange_survives(exchange: Exchange) -> None:
    sock = exchange.ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(exchange.settings.endpoint("exchange_rpc"))
    try:
        bad_qty = OrderRequest.model_construct(client_order_id="t1-20260303-x", agent_id="t1", code="005930",
                                               side="buy", order_type="limit", qty=0, price=70000, ts_ns=0)
        for frames in ([b"r1", b"", b"\x00garbage"], [b"r2", b"", encode("rpc", "t", 0, bad_qty)], [b"r3"]):
            sock.send_multipart(frames)
            assert sock.poll(2000), f"no answer to {frames!r}"
            request_id, status, body = sock.recv_multipart()
            assert (request_id, status) == (frames[0], b"error")
            reply = decode(body).msg
            assert isinstance(reply, CommandResult) and not reply.ok and reply.reason_code
        client = RpcClient(exchange.ctx, exchange.settings.endpoint("exchange_rpc"), timeout_ms=1000, retries=0)
        with pytest.raises(RpcError):
            client.call(bad_qty)
        client.close()
    finally:
        sock.close()
    with pytest.raises(BrokerError) as err:
        exchange.broker.command("no_such_command")
    assert err.value.reason_code == "UNKNOWN_COMMAND"
    assert exchange.broker.ping()["session"] == "open"


def test_disconnect_fault_times_calls_out_then_they_work_again(exchange: Exchange) -> None:
    b = exchange.broker
    b.fault(kind="disconnect", seconds=6)  # longer than the client's 2 attempts of 2,000 ms
    with pytest.raises(BrokerUnavailable):
        b.ping()
    assert b.connection_state is ConnectionState.DISCONNECTED

    def back() -> bool:
        try:
            return bool(b.ping())
        except BrokerUnavailable:
            return False

    wait_for(back, 30, "the exchange to answer again")
    assert b.connection_state is ConnectionState.CONNECTED


def test_reject_fraction_and_delay_faults(exchange: Exchange) -> None:
    b = exchange.broker
    patient = VenueBroker(exchange.ctx, exchange.settings, timeout_ms=15000, retries=0)
    q = b.quote("005930")
    try:
        b.fault(kind="reject_fraction", fraction=1.0)
        ev = b.place(order(price=q["lower_limit"]))
        assert (ev.status, ev.reason_code) == (OrderStatus.REJECTED, "BROKER_REJECTED_RANDOM")
        b.fault(kind="reject_fraction", fraction=0.0)
        assert b.place(order(price=q["lower_limit"])).status is OrderStatus.ACCEPTED
        b.fault(kind="delay", ms=5000)  # longer than this client's 2 attempts of 2,000 ms
        with pytest.raises(BrokerUnavailable):
            b.ping()
        assert patient.ping()["session"] == "open"  # a client that waits long enough gets its answer
    finally:
        patient.fault(kind="clear")
        patient.close()
    with pytest.raises(BrokerError) as err:
        b.fault(kind="explode")
    assert err.value.reason_code == "BAD_FAULT"


def test_duplicate_and_early_notices(exchange: Exchange) -> None:
    b = exchange.broker
    sub = b.subscribe_notices()
    time.sleep(0.3)
    q = b.quote("005930")
    try:
        b.fault(kind="duplicate_notice", on=True)
        req = order(price=q["lower_limit"])
        b.place(req)
        got = notices_for(sub, req.client_order_id, want=2)
        assert [e.msg.status for e in got] == [OrderStatus.ACCEPTED, OrderStatus.ACCEPTED]
        assert got[0].seq + 1 == got[1].seq  # two frames of one notice, not one frame seen twice
        b.fault(kind="duplicate_notice", on=False)
        b.fault(kind="notice_before_reply", on=True)
        req2 = order(price=q["lower_limit"])
        b.place(req2)
        # the notice left before the reply did: it is already waiting when place() returns
        assert sub.socket.poll(1000)
        assert notices_for(sub, req2.client_order_id, timeout_s=1.0)
    finally:
        b.fault(kind="clear")
        sub.close()


def test_faults_can_come_from_the_configuration(fresh_exchange: Callable[..., Exchange]) -> None:
    ex = fresh_exchange(TRADER_CLOCK__START_TIME="10:00", TRADER_EXCHANGE__FAULTS__REJECT_FRACTION="1.0")
    ev = ex.broker.place(order(price=ex.broker.quote("005930")["lower_limit"]))
    assert ev.reason_code == "BROKER_REJECTED_RANDOM"


def test_state_survives_kill_9_and_restart(fresh_exchange: Callable[..., Exchange]) -> None:
    ex = fresh_exchange(TRADER_CLOCK__SPEED="60", TRADER_CLOCK__START_TIME="10:00")
    b = ex.broker
    q = b.quote("005930")
    resting = order(price=q["lower_limit"])
    b.place(resting)
    b.place(order(qty=3, price=q["last"] + 2 * q["tick_size"]))
    orders = {o.client_order_id: o for o in b.orders_today()}
    fills = {f.exec_id: f for f in b.fills_today()}
    account = b.account()
    assert fills
    ex.kill(signal.SIGKILL)
    ex.start()
    after = {o.client_order_id: o for o in b.orders_today()}
    assert {k: (o.broker_order_id, o.status, o.filled_qty) for k, o in after.items()} == {
        k: (o.broker_order_id, o.status, o.filled_qty) for k, o in orders.items()
    }
    assert {f.exec_id: f for f in b.fills_today()} == fills
    assert b.account()["cash_won"] == account["cash_won"]
    assert b.place(resting).broker_order_id == orders[resting.client_order_id].broker_order_id
    q = b.quote("005930")
    b.place(order(qty=2, price=q["last"] + 2 * q["tick_size"]))
    new_ids = [f.exec_id for f in b.fills_today()]
    assert len(new_ids) == len(set(new_ids)) > len(fills)


def test_session_events_in_order_and_open_orders_expire_at_the_close(
    fresh_exchange: Callable[..., Exchange],
) -> None:
    ex = fresh_exchange(TRADER_CLOCK__SPEED="600", TRADER_CLOCK__START_TIME="15:12")
    b = ex.broker
    sub = b.subscribe_market(["005930"])
    notes = b.subscribe_notices()
    time.sleep(0.2)
    q = b.quote("005930")
    req = order(price=q["lower_limit"])
    assert b.place(req).status is OrderStatus.ACCEPTED
    phases: list[tuple[SessionPhase, str]] = []
    references: list[DayReference] = []
    last_print = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not references:
        env = sub.recv(100)
        if env is not None and env.topic == "md.session":
            seen = (env.msg.phase, env.msg.trading_date)
            if not phases or phases[-1] != seen:  # the session is repeated each second; keep the changes
                phases.append(seen)
        elif env is not None and env.topic == "md.tick.005930" and not (phases and phases[-1][1] == "20260304"):
            last_print = env.msg.price
        elif env is not None and env.topic == "md.ref.005930" and env.msg.trading_date == "20260304":
            references.append(env.msg)
    # the new day's base price (its previous close) and limits come with its pre-open
    assert references, "no md.ref.005930 for 20260304"
    ref = references[0]
    assert ref.base_price == last_print == b.quote("005930")["base_price"]
    assert (ref.lower_limit, ref.upper_limit) == krx.limit_prices(ref.base_price)
    # the repeat of the session in force at the start (open) may come first
    assert [p for p, _ in phases[-3:]] == [SessionPhase.CLOSING, SessionPhase.CLOSED, SessionPhase.PRE_OPEN]
    assert {p for p, _ in phases[:-3]} <= {SessionPhase.OPEN}
    assert phases[-3][1] == phases[-2][1] == "20260303" and phases[-1][1] == "20260304"
    expired = [e.msg for e in notices_for(notes, req.client_order_id, timeout_s=2, want=5)]
    assert any(m.status is OrderStatus.EXPIRED for m in expired)
    assert not b.open_orders()
    sub.close()
    notes.close()


def test_backoff_grows_with_jitter_to_its_ceiling_and_resets() -> None:
    import random

    from services.broker.backoff import Backoff

    backoff = Backoff(rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(12)]
    ceilings = [min(30.0, 2.0**k) for k in range(12)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings))
    assert max(delays) <= 30.0 and delays[-1] >= 15.0  # capped, and attempts never run out
    assert len(set(delays)) == len(delays)  # jittered, not lockstep
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def test_store_saves_increments_and_loads_back_the_whole_state(tmp_path: Path) -> None:
    import datetime as dt

    from core.instruments import load_instruments
    from core.krx import Session
    from core.matching import MatchingEngine
    from services.exchange.store import ExchangeStore

    instruments = load_instruments(PROJECT_ROOT / "configs" / "instruments.csv")
    engine = MatchingEngine(instruments)
    engine.open_account("firm", 100_000_000)
    engine.start_day(dt.date(2026, 3, 3), {}, 0)
    engine.set_session(Session.CONTINUOUS, 1)
    store = ExchangeStore(tmp_path / "exchange.sqlite")
    service = {"version": 1, "seed": 7, "days_simulated": 1, "market_ns": 1}
    store.save(service, engine, engine.take_changes(), [], everything=True)
    last = engine.last_price("005930")
    assert last is not None
    for i in range(20):  # resting buys, then prints that fill some of them and move the rest in their queue
        engine.submit("firm", f"t1-20260303-{i}", "005930", "buy", "limit", 10, last - (i % 3) * 100, 10 + i)
        store.save({**service, "market_ns": 10 + i}, engine, engine.take_changes(),
                   [(f"r-{i}", {"status": "rejected"})] if i % 7 == 0 else [])
    engine.on_trade("005930", last - 100, 1_000, 100)
    engine.cancel("t1-20260303-2", 0, 101)
    store.save({**service, "market_ns": 101}, engine, engine.take_changes(), [])
    store.close()

    reopened = ExchangeStore(tmp_path / "exchange.sqlite")
    saved = reopened.load()
    reopened.close()
    assert saved is not None and saved["market_ns"] == 101 and set(saved["rejected"]) == {"r-0", "r-7", "r-14"}
    assert engine.fills_today()
    restored = MatchingEngine.from_state(saved["engine"], instruments)
    assert restored.to_state() == engine.to_state()
    assert restored.account("firm") == engine.account("firm")


def test_market_data_started_mid_session_learns_the_session_and_forwards_it_once(
    fresh_exchange: Callable[..., Exchange],
) -> None:
    ex = fresh_exchange(TRADER_CLOCK__SPEED="1", TRADER_CLOCK__START_TIME="10:00")
    assert ex.broker.ping()["session"] == "open"  # the opening was announced before anyone listened
    procs: list[subprocess.Popen[bytes]] = []
    bus_sub = Subscriber(ex.ctx, ex.settings.endpoint("bus_out"), ["md.session"], linger_ms=0)
    market_data = RpcClient(ex.ctx, ex.settings.endpoint("market_data_rpc"), timeout_ms=1000, retries=0)
    try:
        for module in ("bus.proxy", "services.market_data"):
            log = open(ex.run_dir / f"{module}.log", "ab")
            procs.append(subprocess.Popen([sys.executable, "-m", module], cwd=PROJECT_ROOT, env=ex.env,
                                          stdout=log, stderr=log))
            log.close()

        def session_on_the_snapshot() -> dict[str, Any] | None:
            assert all(p.poll() is None for p in procs), "a process died"
            try:
                reply = market_data.call(Command(command_id="s", name="snapshot", args={"bars": 0}))
            except RpcFailure:  # not up yet
                market_data.close()
                return None
            assert isinstance(reply, CommandResult) and reply.ok
            return reply.result.get("session")  # type: ignore[no-any-return,union-attr]

        session = wait_for(session_on_the_snapshot, START_TIMEOUT_S, "market data to know the session")
        assert (session["phase"], session["trading_date"]) == ("open", "20260303")
        # the exchange repeats the session each second; the bus hears it once
        heard: list[SessionEvent] = []
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            env = bus_sub.recv(100)
            if env is not None and isinstance(env.msg, SessionEvent):
                heard.append(env.msg)
        assert len(heard) <= 1 and all(m.phase is SessionPhase.OPEN for m in heard)
    finally:
        market_data.close()
        bus_sub.close()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_the_calendar_is_kept_on_disk_and_a_process_that_finds_it_never_imports_pandas(tmp_path: Path) -> None:
    probe = (
        "import datetime as dt, json, sys; from core import krx; "
        "days = krx.trading_days(dt.date(2024, 1, 1), dt.date(2026, 12, 31)); "
        "print(json.dumps([len(days), [krx.market_hours(d) for d in days[::50]], "
        "krx.next_trading_day(dt.date(2026, 2, 13)).isoformat(), 'pandas' in sys.modules]))"
    )
    cache = tmp_path / "cache"

    def run(folder: Path) -> list[Any]:
        env = {**os.environ, "TRADER_CACHE_DIR": str(folder)}
        out = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=120, env=env)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    first, second = run(cache), run(cache)
    assert (first[-1], second[-1]) == (True, False), "built once (pandas), then read from the file"
    assert first[:-1] == second[:-1] and first[0] > 700 and first[2] == "2026-02-19"
    (cache / "xkrx-calendar.json").write_text("{not json")
    assert run(cache) == first, "a damaged cache is built again, never trusted"
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert run(blocked / "cache") == first, "a folder that cannot be written: built in memory"
    said = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                           "from core.calendar_cache import load_calendar; print(load_calendar(Path(sys.argv[1])))",
                           str(blocked / "cache")], check=False, cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert said.stdout.startswith("built (not cached: [Errno 20] Not a directory"), said.stdout + said.stderr


def test_the_closing_auction_is_published_before_the_close_and_the_expiries_after_it() -> None:
    # pure: the venue's output at 15:30, in order (what the feed carries, message by message)
    import datetime as dt

    from core.instruments import load_instruments
    from core.matching import MatchingEngine
    from core.messages import Bar, OrderEvent, Tick
    from services.exchange.clock import kst_ns
    from services.exchange.venue import PaperVenue

    day = dt.date(2026, 3, 3)
    master = load_instruments(PROJECT_ROOT / "configs" / "instruments.csv")
    engine = MatchingEngine({"005930": master["005930"]})
    engine.open_account("firm", 1_000_000_000)
    venue = PaperVenue({"005930": master["005930"]}, engine, seed=8, first_day=day)
    venue.begin_day(kst_ns(day, "15:25"))
    lower = engine.price_limits("005930")[0]  # type: ignore[index]
    assert engine.submit("firm", "t1-20260303-1", "005930", "buy", "limit", 10, lower, kst_ns(day, "15:25"), agent_id="t1")
    out = venue.advance(kst_ns(day, "15:31"))
    kinds = [(topic, type(msg).__name__, getattr(msg, "phase", None) or getattr(msg, "status", None)) for topic, msg in out]
    # the day's final flow report is stamped at the close and comes first, as the back-tester hands it before the bar
    assert kinds[0] == ("md.flow.005930", "InvestorFlow", None) and not out[0][1].provisional  # type: ignore[attr-defined]
    out = out[1:]
    kinds = kinds[1:]
    assert kinds == [
        ("md.tick.005930", "Tick", None),  # the auction's single-price print
        ("md.bar.1m.005930", "Bar", None),  # the 15:30 bar
        ("md.session", "SessionEvent", SessionPhase.CLOSED),
        ("exec.event", "OrderEvent", OrderStatus.EXPIRED),
    ]
    tick, bar = out[0][1], out[1][1]
    assert isinstance(tick, Tick) and isinstance(bar, Bar) and isinstance(out[3][1], OrderEvent)
    assert bar.ts_ns == tick.ts_ns == kst_ns(day, "15:30") and tick.price == bar.close and tick.qty == bar.volume
    assert out[3][1].client_order_id == "t1-20260303-1"


def test_an_exchange_restarted_after_the_close_does_not_reopen_the_day(
    fresh_exchange: Callable[..., Exchange],
) -> None:
    ex = fresh_exchange(TRADER_CLOCK__SPEED="60", TRADER_CLOCK__START_TIME="15:29")
    b = ex.broker
    closed = wait_for(lambda: (p := b.ping())["session"] == "closed" and p, 30, "the close")
    ex.kill()
    ex.start()
    after = b.ping()
    assert after["trading_date"] == closed["trading_date"]
    assert after["session"] == "closed", after
