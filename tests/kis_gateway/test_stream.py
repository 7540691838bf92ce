"""The gateway's KIS WebSocket client against the real local KIS server process (faults included)."""

from __future__ import annotations

import json
import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as sync_connect
from websockets.sync.server import ServerConnection, serve

from services.kis_gateway.notices import BookRecord, NoticeRecord, TickRecord
from services.kis_gateway.stream import (
    Backoff,
    Event,
    Resubscribed,
    StateChange,
    StreamClient,
    StreamProblem,
    StreamState,
)
from tests.kis_sim.conftest import COMMON, Server, free_port, subscribe_msg

BACKOFF = Backoff(initial_s=0.2, cap_s=1.6, jitter=0.25)


class Approvals:
    """The gateway's approval-key cache, as the client sees it: one key, until it is dropped."""

    def __init__(self, sim: Server) -> None:
        self.sim = sim
        self.key: str | None = None
        self.issued = 0
        self.dropped = 0

    def get(self) -> str:
        if self.key is None:
            self.key = self.sim.approval()
            self.issued += 1
        return self.key

    def drop(self) -> None:
        self.dropped += 1
        self.key = None


class Feed:
    """Everything a client handed over, read as the gateway does: wait on its pipe, then drain."""

    def __init__(self, client: StreamClient) -> None:
        self.client = client
        self.events: list[Event] = []

    def wait(self, want: Callable[[Event], bool], timeout_s: float = 10.0, after: int = 0) -> Event:
        """The first event from index ``after`` on that ``want`` accepts, waiting up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        seen = after
        while True:
            for i in range(seen, len(self.events)):
                if want(self.events[i]):
                    return self.events[i]
            seen = max(seen, len(self.events))
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching event in {timeout_s} s; last events {self.events[-8:]!r}; "
                                     f"{self.client.describe()}")
            select.select([self.client.fileno()], [], [], left)
            self.events += self.client.drain()

    def until(self, check: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Wait for a condition on the client's state, draining events meanwhile."""
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met in {timeout_s} s: {self.client.describe()}")
            select.select([self.client.fileno()], [], [], 0.05)
            self.events += self.client.drain()

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def resubscribed(self, session: int, timeout_s: float = 10.0) -> Resubscribed:
        e = self.wait(lambda e: isinstance(e, Resubscribed) and e.session == session, timeout_s)
        assert isinstance(e, Resubscribed)
        return e


@contextmanager
def streaming(sim: Server, codes: list[str], approvals: Approvals | None = None,
              **options: Any) -> Iterator[tuple[StreamClient, Feed]]:
    approvals = approvals or Approvals(sim)
    settings: dict[str, Any] = {"backoff": BACKOFF, "heartbeat_timeout_s": 3.0, "ack_timeout_s": 3.0,
                                "healthy_s": 60.0, "requests_per_s": 15.0, "seed": 7, **options}
    client = StreamClient(sim.ws_url, hts_id=sim.creds["hts_id"], approval=approvals.get,
                          drop_approval=approvals.drop, env=sim.env, **settings)
    client.want(codes)
    client.start()
    try:
        yield client, Feed(client)
    finally:
        client.stop()


def is_state(new: StreamState, old: StreamState | None = None) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, StateChange) and e.new is new and (old is None or e.old is old)


def order_notices(sim: Server, feed: Feed, qty: int = 1) -> tuple[NoticeRecord, NoticeRecord]:
    """Place a market buy through REST; its acknowledgement and fill as the stream delivered them."""
    reply = sim.order(qty=qty)
    assert reply.status_code == 200 and reply.json()["rt_cd"] == "0", reply.text
    odno = reply.json()["output"]["ODNO"].lstrip("0")
    ack = feed.wait(lambda e: isinstance(e, NoticeRecord) and e.odno == odno and not e.is_fill)
    fill = feed.wait(lambda e: isinstance(e, NoticeRecord) and e.odno == odno and e.is_fill)
    assert isinstance(ack, NoticeRecord) and isinstance(fill, NoticeRecord)
    return ack, fill


# --- what arrives ------------------------------------------------------------------------------


def test_every_tick_of_a_multi_record_frame_arrives_and_books_in_the_current_layouts(sim: Server) -> None:
    code = "000660"  # the busiest code of the local server's seeded day
    with streaming(sim, [code]) as (client, feed):
        feed.resubscribed(1)  # connected once notices flow; ticks and books follow
        feed.until(lambda: client.describe()["streamed"] == [code] and client.describe()["polled"] == [])
        feed.until(lambda: len(feed.of(TickRecord)) >= 40 and bool(feed.of(BookRecord)))
        ticks = feed.of(TickRecord)
        counters = client.describe()["counters"]
    assert counters["ticks"] >= 2 * (counters["frames"] - counters["pingpongs"] - counters["acks"] - counters["books"])
    # No record of a frame lost: each trade's cumulative volume is the last one's plus its own quantity.
    assert all(b.cum_volume == a.cum_volume + b.qty for a, b in zip(ticks, ticks[1:]))
    assert {t.fields for t in ticks} == {47} and {b.fields for b in feed.of(BookRecord)} == {63}
    assert all(t.code == code and t.price > 0 for t in ticks)


def test_notices_are_decrypted_and_read_after_an_order(sim: Server) -> None:
    with streaming(sim, ["005930"]) as (client, feed):
        feed.resubscribed(1)
        ack, fill = order_notices(sim, feed, qty=2)
        assert (ack.fields, ack.cust_id, ack.code, ack.qty, ack.accepted, ack.refused) == (
            26, sim.creds["hts_id"], "005930", 2, "1", False)
        assert (fill.qty, fill.accepted) == (2, "2") and fill.price > 0
        # PINGPONG (every 0.3 s, closed after 1.5 s unanswered) is echoed: still the first session
        feed.until(lambda: client.describe()["counters"]["pingpongs"] >= 8)
        assert client.describe()["counters"]["sessions"] == 1 and client.describe()["state"] == "connected"


def test_the_older_46_59_and_23_field_layouts(tmp_path: Path) -> None:
    server = Server(tmp_path, "--tick-fields", "46", "--book-fields", "59", "--notice-fields", "23",
                    "--rate-limit", "1000", *COMMON)
    try:
        with streaming(server, ["000660"]) as (_, feed):
            feed.resubscribed(1)
            ack, fill = order_notices(server, feed)
            feed.until(lambda: bool(feed.of(TickRecord) and feed.of(BookRecord)))
    finally:
        server.stop()
    assert (ack.fields, fill.fields, fill.is_fill, fill.qty) == (23, 23, True, 1)
    assert {t.fields for t in feed.of(TickRecord)} == {46} and {b.fields for b in feed.of(BookRecord)} == {59}


def test_the_42nd_registration_never_goes_out_and_codes_past_the_limit_are_polled(sim: Server) -> None:
    codes = ["005930", *(f"{100_000 + i:06d}" for i in range(44))]  # 45 codes: 1 + 45 + 45 wished
    with streaming(sim, codes, requests_per_s=18.0) as (client, feed):
        feed.resubscribed(1, timeout_s=15)
        feed.until(lambda: client.describe()["streamed"] == codes[:40], timeout_s=15)
        view = client.describe()
        assert view["polled"] == codes[40:] and view["books"] == []
        assert view["counters"]["registrations_sent"] == 41 and view["counters"]["limit_refusals"] == 0
        assert sim.control("status")["stream"]["subscriptions"] == 41
        # Fewer codes: the freed registrations go to their order books.
        client.want(codes[:10])
        feed.until(lambda: client.describe()["books"] == codes[:10], timeout_s=15)
        view = client.describe()
        assert view["streamed"] == codes[:10] and view["polled"] == []
        assert view["counters"]["unregistrations_sent"] == 30
        assert sim.control("status")["stream"]["subscriptions"] == 21
        assert not [p for p in feed.of(StreamProblem) if p.kind == "registration_limit"]


# --- drops and reconnects ------------------------------------------------------------------------


def test_a_dropped_session_reconnects_with_backoff_resubscribes_and_notices_flow_again(sim: Server) -> None:
    with streaming(sim, ["005930"]) as (client, feed):
        feed.resubscribed(1)
        for session, fault in ((2, {}), (3, {"abort": True})):
            start = len(feed.events)
            sim.fault("drop-ws", **fault)
            down = feed.wait(is_state(StreamState.DISCONNECTED, StreamState.CONNECTED), after=start)
            retry = feed.wait(is_state(StreamState.RECONNECTING), after=start)
            again = feed.resubscribed(session)
            assert feed.events.index(down) < feed.events.index(retry) < feed.events.index(again)
            feed.until(lambda: client.describe()["streamed"] == ["005930"])
            expected = "closed by the server (1001" if not fault else "without a close frame"
            assert isinstance(down, StateChange) and expected in down.why
            # backoff: the second drop in a row waits twice as long as the first (less jitter)
            delay = client.describe()["last_backoff_s"]
            base = BACKOFF.initial_s * 2 ** (session - 2)
            assert base * (1 - BACKOFF.jitter) <= delay <= base
        assert client.describe()["attempts"] == 3
        order_notices(sim, feed)


def test_the_weekly_restart_is_survived_with_a_fresh_approval_key(sim: Server) -> None:
    approvals = Approvals(sim)
    with streaming(sim, ["005930"], approvals) as (client, feed):
        feed.resubscribed(1)
        sim.fault("weekly-restart")
        feed.resubscribed(2, timeout_s=15)
        assert approvals.dropped == 1 and approvals.issued == 2  # the old key was refused (OPSP0011)
        assert [p for p in feed.of(StreamProblem) if p.kind == "approval_refused"]
        sim.token(fresh=True)  # the restart revoked the REST token too
        order_notices(sim, feed)
        assert client.describe()["state"] == "connected"


def test_another_session_holding_the_app_key_blocks_without_a_reconnect_loop(sim: Server) -> None:
    with sync_connect(sim.ws_url) as holder:
        holder.send(subscribe_msg(sim.approval(), "H0STCNT0", "005930"))
        assert '"OPSP0000"' in holder.recv(timeout=5)
        with streaming(sim, ["005930"]) as (client, feed):
            blocked = feed.wait(is_state(StreamState.BLOCKED))
            blocked_at = time.monotonic()
            assert isinstance(blocked, StateChange) and "OPSP8996" in blocked.why
            assert client.describe()["state"] == "blocked" and client.describe()["attempts"] == 1
            holder.close()
            feed.wait(is_state(StreamState.CONNECTED, StreamState.BLOCKED))
            # it waited the backoff's cap (less jitter), not its 0.2 s start, before trying again
            assert time.monotonic() - blocked_at >= BACKOFF.cap_s * (1 - BACKOFF.jitter) - 0.05
            assert client.describe()["attempts"] == 2
            feed.resubscribed(1)


# --- a server that misbehaves, and stopping ------------------------------------------------------------


def test_bad_frames_are_counted_and_reported_and_a_quiet_server_is_left() -> None:
    """A scripted server: acks, garbage, a PINGPONG (whose echo it checks), a good tick, then silence."""
    echoed = threading.Event()
    tick = "0|H0STCNT0|001|" + "^".join(["005930", "093354", "71900", *["0"] * 9, "3", "3052507", *["0"] * 19,
                                          "20230612", *["0"] * 13])

    def handler(ws: ServerConnection) -> None:
        for _ in range(3):  # notices, then the code's ticks and book: each acknowledged
            asked = json.loads(ws.recv(timeout=5))["body"]["input"]
            ws.send(json.dumps({"header": {"tr_id": asked["tr_id"], "tr_key": asked["tr_key"]},
                                "body": {"rt_cd": "0", "msg_cd": "OPSP0000", "msg1": "SUBSCRIBE SUCCESS"}}))
        for garbage in ("garbage", "0|H0STCNT0|002|a^b", "1|H0STCNI9|001|!!!", '{"header":'):
            ws.send(garbage)
        ws.send('{"header":{"tr_id":"PINGPONG","datetime":"20260105090000"}}')
        if "PINGPONG" in str(ws.recv(timeout=5)):
            echoed.set()
        ws.send(tick)
        with suppress(ConnectionClosed, TimeoutError):
            ws.recv(timeout=10)  # quiet until the client goes

    port = free_port()
    with serve(handler, "127.0.0.1", port) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        client = StreamClient(f"ws://127.0.0.1:{port}", hts_id="hts", approval=lambda: "key",
                              drop_approval=lambda: None, backoff=BACKOFF, heartbeat_timeout_s=2.0)
        client.want(["005930"])
        client.start()
        try:
            feed = Feed(client)
            feed.resubscribed(1)
            got = feed.wait(lambda e: isinstance(e, TickRecord))
            view = client.describe()
            assert isinstance(got, TickRecord) and got.cum_volume == 3052507 and echoed.is_set()
            assert view["counters"]["bad_frames"] == 4 and view["state"] == "connected"
            assert [p for p in feed.of(StreamProblem) if p.kind == "bad_frame"]
            # no frame for heartbeat_timeout_s: the session is given up and a new one made
            quiet = feed.wait(lambda e: isinstance(e, StreamProblem) and e.kind == "heartbeat")
            assert "PINGPONG" in quiet.text
            feed.resubscribed(2)
        finally:
            client.stop()
            server.shutdown()
            thread.join(5)


def test_stop_is_prompt_and_idempotent_while_nothing_listens() -> None:
    client = StreamClient(f"ws://127.0.0.1:{free_port()}", hts_id="hts", approval=lambda: "key",
                          drop_approval=lambda: None, backoff=Backoff(initial_s=5.0))
    client.start()
    feed = Feed(client)
    problem = feed.wait(lambda e: isinstance(e, StreamProblem) and e.kind == "connect")
    assert "cannot connect" in problem.text and client.describe()["state"] == "reconnecting"
    started = time.monotonic()
    client.stop()
    client.stop()
    assert time.monotonic() - started < 2.0
    assert client.describe()["state"] == "disconnected"
    assert isinstance(client.drain()[-1], StateChange)
    with pytest.raises(ValueError):
        client.fileno()
    with pytest.raises(RuntimeError):
        client.start()
