"""The gateway's REST client against the real local KIS server process: tokens, orders, queries, limits, faults."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from services.kis_gateway.ratelimit import Budget, Kind, RateLimiter
from services.kis_gateway.rest import GET_ATTEMPTS, KisRest
from services.kis_gateway.wire import (
    CANCEL_TOO_EARLY,
    INSUFFICIENT_CASH,
    INSUFFICIENT_SHARES,
    KisFateUnknown,
    KisRateLimited,
    KisRejected,
    KisUnavailable,
    PlaceReply,
)
from tests.kis_sim.conftest import COMMON, Server

CODE = "005930"


class Clock:
    """The gateway's wall clock, moved on together with the server's auth clock (tokens live in wall time)."""

    def __init__(self) -> None:
        self.offset_s = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return time.time() + self.offset_s

    def advance(self, sim: Server, seconds: float) -> None:
        sim.control("auth-clock", {"advance_s": seconds})
        self.offset_s += seconds

    def sleep(self, seconds: float) -> None:
        """A sleep that only moves this clock on (for waits the server does not need to see pass)."""
        self.slept.append(seconds)
        self.offset_s += seconds


Factory = Callable[..., KisRest]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[Factory]:
    """KisRest clients of a server (the demo ``sim`` unless told) sharing one token file unless told."""
    made: list[KisRest] = []

    def factory(server: Server | None = None, rate_per_s: float = 20.0, cache_path: Path | None = None,
                sleep: Callable[[float], None] = time.sleep) -> KisRest:
        server = server or request.getfixturevalue("sim")
        c = server.creds
        rest = KisRest(server.base, server.env, c["appkey"], c["appsecret"], c["account"],
                       cache_path or tmp_path / "kis-token.json", rate_per_s=rate_per_s, clock=clock, sleep=sleep)
        made.append(rest)
        return rest

    yield factory
    for rest in made:
        rest.close()


def cancel_once_taken(rest: KisRest, receipt: PlaceReply, code: str = CODE) -> PlaceReply:
    """Cancel all of an order, asking again while KIS says the exchange has not taken it yet (KIS.md 7.12)."""
    for _ in range(200):
        try:
            return rest.cancel(receipt.odno, receipt.branch, 0, True, code)
        except KisRejected as exc:
            if exc.reason_code != CANCEL_TOO_EARLY:
                raise
    raise AssertionError("the cancel was never taken")


def trading_date(sim: Server) -> str:
    return str(sim.control("status")["trading_date"])


# --- tokens --------------------------------------------------------------------------------------------


def test_token_and_approval_key_are_cached_on_disk_and_reused_by_the_next_process(
        make: Factory, sim: Server, tmp_path: Path, clock: Clock) -> None:
    first = make()
    first.price(CODE)
    key = first.approval_key()
    assert first.tokens.issued == 1 and first.approval_key() == key and first.counters["approval_issued"] == 1
    cache = tmp_path / "kis-token.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    text = cache.read_text()
    assert sim.creds["appsecret"] not in text and sim.creds["appkey"] not in text
    (entry,) = json.loads(text)["apps"].values()
    first.close()
    second = make()
    quote = second.price(CODE)  # a second issuance within the minute would be EGW00133
    assert second.tokens.issued == 0 and quote.last > 0
    assert "failures.EGW00133" not in second.counters
    assert second.tokens.token() == entry["token"] and second.approval_key() == entry["approval_key"] == key
    assert "approval_issued" not in second.counters
    second.drop_approval(key)  # the WebSocket server refused it
    assert second.approval_key() != key
    cache.write_text("{half a file")  # a crash mid-write of another tool: not trusted, not fatal
    clock.advance(sim, 61)
    third = make()
    assert third.price(CODE).last > 0 and third.tokens.issued == 1
    assert json.loads(cache.read_text())["version"] == 1 and stat.S_IMODE(cache.stat().st_mode) == 0o600


def test_token_is_issued_once_for_callers_on_two_threads_and_renewed_an_hour_before_it_expires(
        make: Factory, sim: Server, clock: Clock) -> None:
    rest = make()
    with ThreadPoolExecutor(8) as pool:  # the WebSocket thread asks for the approval key meanwhile
        tokens = list(pool.map(lambda i: rest.tokens.token() if i % 2 else rest.approval_key(), range(16)))
    assert len(set(tokens[1::2])) == 1 and len(set(tokens[::2])) == 1
    assert rest.tokens.issued == 1 and rest.counters["approval_issued"] == 1
    rest.price(CODE)
    old = rest.tokens.token()
    clock.advance(sim, 23.5 * 3600)  # half an hour left of its 24
    rest.price(CODE)
    assert rest.tokens.issued == 2 and rest.tokens.token() != old
    assert not any(k.startswith("failures.") for k in rest.counters)


def test_token_revoked_mid_day_is_dropped_reissued_once_and_the_call_succeeds(make: Factory, sim: Server,
                                                                                clock: Clock) -> None:
    rest = make()
    rest.price(CODE)
    sim.fault("revoke-token")
    clock.advance(sim, 61)
    assert rest.price(CODE).last > 0
    assert rest.counters["failures.EGW00121"] == 1 and rest.counters["token_reissues"] == 1
    assert rest.tokens.issued == 2
    sim.fault("revoke-token")
    clock.advance(sim, 61)
    quote = rest.price(CODE)
    receipt = rest.place(CODE, "buy", 1, quote.lower)  # the order met the dead token: refused, then sent once
    assert rest.counters["failures.EGW00121"] == 2 and rest.counters["calls.VTTC0012U"] == 1
    rows = rest.daily_orders(trading_date(sim), trading_date(sim))
    assert [r.key for r in rows] == [receipt.key]


def test_token_refused_within_the_minute_of_its_issuance_is_unavailable_and_kis_is_not_asked(
        make: Factory, sim: Server, clock: Clock) -> None:
    rest = make()
    rest.price(CODE)
    sim.fault("revoke-token")
    with pytest.raises(KisUnavailable, match="one a minute"):
        rest.price(CODE)
    with pytest.raises(KisUnavailable):
        rest.place(CODE, "buy", 1, 60_000)  # not sent: a known fate, unlike KisFateUnknown
    assert "failures.EGW00133" not in rest.counters and rest.counters["calls.VTTC0012U"] == 0
    clock.advance(sim, 61)
    assert rest.price(CODE).last > 0


# --- orders and queries ----------------------------------------------------------------------------------


def test_orders_cancels_and_daily_orders_paged_beyond_one_demo_page(make: Factory, sim: Server) -> None:
    rest = make()
    quote = rest.price(CODE)
    receipts = [rest.place(CODE, "buy", n, quote.lower) for n in range(1, 18)]  # 17 orders: two pages of 15
    assert len({r.key for r in receipts}) == 17 and all(r.branch for r in receipts)
    day = trading_date(sim)
    rows = rest.daily_orders(day, day)
    assert rest.counters["calls.VTTC0081R"] == 2
    assert [r.key for r in rows] == [r.key for r in receipts]
    assert [(r.qty, r.price, r.side, r.remaining_qty) for r in rows] == [(n, quote.lower, "buy", n)
                                                                          for n in range(1, 18)]
    cancels = [cancel_once_taken(rest, receipts[i]) for i in (0, 16)]
    rows = rest.daily_orders(day, day)
    assert len(rows) == 19
    by_key = {r.key: r for r in rows}
    for cancel, original in zip(cancels, (receipts[0], receipts[16]), strict=True):
        row = by_key[cancel.key]
        assert row.canceled and row.original_key == original.key and row.cancel_confirmed_qty == row.qty
        assert by_key[original.key].remaining_qty == 0
    still_open = rest.open_orders(day)
    assert sorted(o.key for o in still_open) == sorted(r.key for r in receipts[1:16])
    assert all(o.open_qty == o.qty for o in still_open)
    only = rest.daily_orders(day, day, odno=receipts[5].odno)
    assert [r.key for r in only] == [receipts[5].key]


def test_price_investor_flows_balance_after_fills_and_refusals_with_the_firms_reason(make: Factory) -> None:
    rest = make()
    q = rest.price(CODE)
    assert q.code == CODE and q.lower <= q.last <= q.upper and q.base == 71_000 and q.tick == 100 and q.eps > 0
    assert all(len(d.date) == 8 for d in rest.investor(CODE))
    with pytest.raises(KisRejected):
        rest.price("999999")  # KIS refuses a code it does not list: a refusal, not retried
    assert rest.counters["calls.FHKST01010100"] == 2
    before = rest.balance()
    assert before.positions == {} and before.cash_won > 0
    rest.place(CODE, "buy", 10, 0, "market")
    after = rest.balance()
    qty, avg = after.positions[CODE]
    assert qty == 10 and avg > 0 and before.cash_won - after.cash_won >= 10 * avg
    rest.place(CODE, "sell", 4, 0, "market")
    assert rest.balance().positions[CODE][0] == 6
    with pytest.raises(KisRejected) as no_shares:
        rest.place(CODE, "sell", 100, 0, "market")
    assert no_shares.value.reason_code == INSUFFICIENT_SHARES and no_shares.value.msg_cd == "APBK0919"
    with pytest.raises(KisRejected) as no_cash:
        rest.place(CODE, "buy", 1_000_000, q.upper)
    assert no_cash.value.reason_code == INSUFFICIENT_CASH


# --- the rate limit ----------------------------------------------------------------------------------------


def test_rate_limit_hit_queries_back_off_and_succeed_orders_are_refused_and_never_resent(
        make: Factory, sim: Server, clock: Clock) -> None:
    sim.control("settings", {"rate_limit_per_s": 2})
    rest = make(rate_per_s=50)  # faster than the server allows: KIS's EGW00201 must slow it down
    quote = rest.price(CODE)
    rest.price(CODE)
    with pytest.raises(KisRateLimited):
        rest.place(CODE, "buy", 1, quote.lower)
    assert rest.limiter.paused_for(clock()) > 0
    receipt = rest.place(CODE, "buy", 2, quote.lower)  # waits out the one-second pause, then goes
    rest.price(CODE)
    day = trading_date(sim)
    rows = rest.daily_orders(day, day)  # refused (two calls in the second already), paused two seconds, answered
    assert [(r.key, r.qty) for r in rows] == [(receipt.key, 2)]
    assert rest.counters["failures.EGW00201"] == 2 and rest.counters["retries"] == 1
    assert rest.counters["calls.VTTC0012U"] == 2
    rest.limiter.penalise(clock())  # a third refusal: four seconds, longer than an order may wait
    with pytest.raises(KisRateLimited, match="not sent"):
        rest.place(CODE, "buy", 3, quote.lower)
    assert rest.counters["calls.VTTC0012U"] == 2 and rest.counters["held_back.VTTC0012U"] == 1


def test_queries_never_take_the_slots_orders_need() -> None:
    limiter = RateLimiter(Budget.of(18))
    now = 1000.0
    queries = 0
    while limiter.acquire(Kind.QUERY, now) == 0.0:
        queries += 1
    assert queries == 18 - limiter.budget.query_reserve
    cancels = 0
    while limiter.acquire(Kind.CANCEL, now) == 0.0:
        cancels += 1
    assert cancels == limiter.budget.query_reserve - limiter.budget.cancel_reserve
    orders = 0
    while limiter.acquire(Kind.ORDER, now) == 0.0:
        orders += 1
    assert orders == limiter.budget.cancel_reserve and orders >= 1
    wait = limiter.acquire(Kind.QUERY, now)
    assert 0 < wait <= 1.0 and limiter.acquire(Kind.QUERY, now + wait) == 0.0


def test_demo_budget_paces_two_calls_per_window_of_one_and_a_quarter_seconds() -> None:
    budget = Budget.for_env("demo")
    assert (budget.calls, budget.window_s, budget.query_reserve) == (2, 1.25, 1)
    limiter = RateLimiter(budget)
    assert limiter.acquire(Kind.QUERY, 0.0) == 0.0
    assert limiter.acquire(Kind.QUERY, 0.1) == pytest.approx(1.15)  # a query leaves the second slot to orders
    assert limiter.acquire(Kind.ORDER, 0.1) == 0.0
    assert limiter.acquire(Kind.ORDER, 0.2) == pytest.approx(1.05)
    assert Budget.for_env("real").calls == 18 and Budget.for_env("real", 5).calls == 5


def test_penalty_grows_is_capped_and_is_forgiven_after_a_clean_stretch() -> None:
    limiter = RateLimiter(Budget.of(18))
    pauses = [limiter.penalise(float(t)) for t in range(8)]
    assert pauses == [1, 2, 4, 8, 16, 30, 30, 30]
    assert limiter.acquire(Kind.ORDER, 8.0) == pytest.approx(29.0)  # everything waits, orders too
    assert limiter.acquire(Kind.ORDER, 40.0) == 0.0
    assert limiter.penalise(200.0) == 1  # a clean minute later: back to the first step


def test_a_clock_set_back_does_not_hold_calls_for_the_size_of_the_step() -> None:
    limiter = RateLimiter(Budget.of(2))
    assert limiter.acquire(Kind.ORDER, 500.0) == limiter.acquire(Kind.ORDER, 500.0) == 0.0
    assert limiter.acquire(Kind.ORDER, 100.0) == pytest.approx(1.0)  # a window from now, not 401 s


# --- faults ----------------------------------------------------------------------------------------------------


def test_order_timeout_and_dropped_connection_are_fate_unknown_and_the_order_is_listed_once(
        make: Factory, sim: Server) -> None:
    rest = make()
    quote = rest.price(CODE)
    sim.fault("order-timeout")
    with pytest.raises(KisFateUnknown, match="EGW00301"):
        rest.place(CODE, "buy", 3, quote.lower)
    sim.fault("order-drop")
    with pytest.raises(KisFateUnknown, match="no answer"):
        rest.place(CODE, "buy", 4, quote.lower)
    assert rest.counters["calls.VTTC0012U"] == 2  # neither was sent again
    day = trading_date(sim)
    rows = rest.daily_orders(day, day)
    assert sorted(r.qty for r in rows) == [3, 4] and len({r.key for r in rows}) == 2


def test_random_500s_on_queries_are_retried_and_an_order_answered_500_is_fate_unknown(
        make: Factory, sim: Server, clock: Clock) -> None:
    rest = make(sleep=clock.sleep)
    quote = rest.price(CODE)
    sim.fault("random-500", fraction=0.3)
    for _ in range(8):
        assert rest.price(CODE).last > 0
    assert rest.counters["failures.EGW00002"] > 0 and rest.counters["retries"] == rest.counters["failures.EGW00002"]
    sim.fault("random-500", fraction=1.0)
    with pytest.raises(KisFateUnknown, match="EGW00002"):
        rest.place(CODE, "buy", 1, quote.lower)
    with pytest.raises(KisUnavailable, match=f"{GET_ATTEMPTS} attempts"):
        rest.price(CODE)
    sim.fault("clear")
    day = trading_date(sim)
    assert rest.daily_orders(day, day) == []  # this server refused it before acting: reconciliation tells


def test_server_down_is_unavailable_and_an_order_is_known_not_sent(make: Factory, sim: Server,
                                                                    clock: Clock) -> None:
    rest = make(sleep=clock.sleep)
    rest.price(CODE)
    sim.stop()
    with pytest.raises(KisUnavailable, match="not sent"):
        rest.place(CODE, "buy", 1, 60_000)
    with pytest.raises(KisUnavailable, match=f"{GET_ATTEMPTS} attempts"):
        rest.price(CODE)
    assert rest.counters["retries"] == GET_ATTEMPTS - 1 and sum(clock.slept) == pytest.approx(0.2 + 0.4 + 0.8)


# --- the real server --------------------------------------------------------------------------------------------


@pytest.fixture
def real(tmp_path: Path) -> Iterator[Server]:
    state = tmp_path / "kis-sim-real"
    state.mkdir()
    server = Server(state, "--env", "real", "--rate-limit", "1000", *COMMON)
    try:
        yield server
    finally:
        server.stop()


def test_real_server_open_orders_come_from_psbl_rvsecncl(make: Factory, real: Server, tmp_path: Path) -> None:
    rest = make(real, cache_path=tmp_path / "real-token.json")
    assert rest.env == "real"
    quote = rest.price(CODE)
    working = [rest.place(CODE, "buy", n, quote.lower) for n in (1, 2, 3)]
    rest.place(CODE, "buy", 1, 0, "market")  # filled at once: not open
    opened = rest.open_orders()
    assert rest.counters["calls.TTTC0084R"] == 1
    assert [(o.key, o.open_qty, o.side, o.price) for o in opened] == [(r.key, n, "buy", quote.lower)
                                                                      for r, n in zip(working, (1, 2, 3), strict=True)]
    cancel_once_taken(rest, working[1])
    assert [o.key for o in rest.open_orders()] == [working[0].key, working[2].key]
    day = trading_date(real)
    assert len(rest.daily_orders(day, day)) == 5 and rest.counters["calls.TTTC0081R"] == 1
