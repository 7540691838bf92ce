"""The gateway's one KIS WebSocket session: subscriptions, PINGPONG, reconnects, and the events it hands over.

KIS allows one real-time session per app key and 41 registrations in it,
execution notices, ticks and order books counted together (KIS.md 5.1).
``StreamClient`` holds that session on a background thread running an
asyncio loop (``websockets``), and hands what arrives to the gateway's main
thread through a queue and a wake-up pipe its ``zmq.Poller`` can watch.

What it registers, in priority order, as many as ``max_registrations``:
the account's execution notices (tr_key = HTS id) first, then a tick
subscription per wanted code, then an order book per code. A code whose tick
registration does not fit, or is refused, is *polled*: the gateway reads it
over REST. The 42nd registration never goes out.

The connection state machine (DESIGN section 5, on the venue's side):

    disconnected --> reconnecting --> connected --(drop)--> disconnected --> reconnecting ...
                          \\--(OPSP8996)--> blocked --(retry at the backoff cap)--> connected

* a drop is a close frame or none, a heartbeat gone quiet (no frame for
  ``heartbeat_timeout_s``: KIS sends PINGPONG, answered by echoing it), an
  unanswered subscription, an error; each failed attempt waits a jittered
  exponential backoff (``Backoff``: 1 s doubling to 30 s), without limit on
  attempts; the backoff starts over after a session that stayed connected
  ``healthy_s`` (a server that accepts and drops at once is not hammered);
* OPSP8996 "ALREADY IN USE appkey" means another session (another deploy)
  holds the key: reconnecting in a loop cannot help and risks KIS blocking
  the key, so the state is ``blocked`` and it retries only at the cap;
* OPSP0010 / OPSP0011 (approval key refused, as after KIS's weekly
  maintenance) calls ``drop_approval`` and the next attempt asks ``approval``
  for a fresh one;
* a session is *connected* once every registration of the plan is
  acknowledged (OPSP0002 "ALREADY IN SUBSCRIBE" counts); then, after every
  connection, the first included, ``Resubscribed`` is emitted: KIS replays
  nothing missed while the socket was down (KIS.md 7.6), so the gateway
  catches up through REST before it trades again.

Requests go out paced (``requests_per_s``), since KIS's own limit on them is
UNCONFIRMED and the local server closes a session that floods it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidURI, WebSocketException
from websockets.uri import parse_uri

from core.krx import CODE_RE
from services.kis_gateway.notices import (
    BOOK_TR,
    NOTICE_TRS,
    TICK_TR,
    Ack,
    AesKey,
    BookRecord,
    Control,
    NoticeRecord,
    Record,
    StreamBadFrame,
    TickRecord,
    parse_message,
)

MAX_REGISTRATIONS = 41  # KIS.md 5.1
SUBSCRIBE, UNSUBSCRIBE = "1", "2"  # tr_type
RETRY_LATER_S = 1.0  # after OPSP0007 / OPSP0009
REPORT_INTERVAL_S = 1.0  # one StreamProblem per kind per interval; the rest counted
CLOSE_TIMEOUT_S = 1.0
_log = logging.getLogger("kis_gateway.stream")

Registration = tuple[str, str]  # (tr_id, tr_key)


class StreamState(StrEnum):
    DISCONNECTED = "disconnected"
    RECONNECTING = "reconnecting"
    CONNECTED = "connected"
    BLOCKED = "blocked"  # another session holds the app key (OPSP8996)


# --- events handed to the owner (besides TickRecord, BookRecord, NoticeRecord) --------------


@dataclass(frozen=True, slots=True)
class StateChange:
    old: StreamState
    new: StreamState
    why: str


@dataclass(frozen=True, slots=True)
class Resubscribed:
    """A session is up with its registrations: catch up through REST (KIS replays nothing) before trading."""

    session: int  # 1 for the first connection, then one more per reconnect
    streamed: tuple[str, ...]  # codes with live ticks
    polled: tuple[str, ...]  # wanted codes without: read them over REST


@dataclass(frozen=True, slots=True)
class StreamProblem:
    """Something the owner should see (logged here too); ``kind`` is stable, ``text`` for a person."""

    kind: str
    text: str


Event = TickRecord | BookRecord | NoticeRecord | StateChange | Resubscribed | StreamProblem


# --- pure parts ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    """Jittered exponential backoff: ``initial_s`` doubling to ``cap_s``, each delay drawn in [(1-jitter)d, d]."""

    initial_s: float = 1.0
    cap_s: float = 30.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if not (0 < self.initial_s <= self.cap_s) or not 0 <= self.jitter < 1:
            raise ValueError(f"backoff needs 0 < initial_s <= cap_s and 0 <= jitter < 1, not {self}")

    def delay_s(self, failures: int, draw: float) -> float:
        """The wait before the next attempt after ``failures`` failures in a row; ``draw`` uniform in [0, 1)."""
        base = min(self.cap_s, self.initial_s * 2.0 ** min(max(failures - 1, 0), 32))
        return base * (1.0 - self.jitter * draw)

    def cap_delay_s(self, draw: float) -> float:
        return self.cap_s * (1.0 - self.jitter * draw)


def wished_registrations(notice: Registration, codes: Sequence[str]) -> list[Registration]:
    """Everything the owner would like registered, most important first: notices, ticks, then books."""
    return [notice, *((TICK_TR, c) for c in codes), *((BOOK_TR, c) for c in codes)]


def subscribe_message(approval_key: str, reg: Registration, tr_type: str) -> str:
    """A register ("1") / unregister ("2") request as KIS documents it (KIS.md 6.2)."""
    return json.dumps({"header": {"approval_key": approval_key, "custtype": "P", "tr_type": tr_type,
                                  "content-type": "utf-8"},
                       "body": {"input": {"tr_id": reg[0], "tr_key": reg[1]}}}, separators=(",", ":"))


# --- one connection ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ending:
    kind: str  # "closed", "heartbeat", "ack_timeout", "approval", "approval_refused", "connect", "blocked", "error"
    text: str


@dataclass(eq=False)
class _Session:
    """What one WebSocket connection holds; touched only on the loop's thread."""

    ws: ClientConnection
    approval_key: str
    opened_s: float
    last_frame_s: float
    active: set[Registration] = field(default_factory=set)
    inflight: dict[Registration, tuple[str, float]] = field(default_factory=dict)  # -> (tr_type, sent at)
    refused: set[Registration] = field(default_factory=set)
    retry_at: dict[Registration, float] = field(default_factory=dict)
    keys: dict[str, AesKey] = field(default_factory=dict)  # tr_id -> the latest ack's key (frames carry no tr_key)
    last_sent_s: float = 0.0
    connected_s: float | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Future[_Ending] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def end(self, kind: str, text: str) -> None:
        if not self.ended.done():
            self.ended.set_result(_Ending(kind, text))


_COUNTERS = ("attempts", "sessions", "frames", "ticks", "books", "notices", "pingpongs", "bad_frames",
             "registrations_sent", "unregistrations_sent", "acks", "limit_refusals", "foreign_notices",
             "events_dropped", "problems", "problems_suppressed")


class StreamClient:
    """The KIS real-time session of the gateway, on a thread of its own.

    Threading contract: construct, ``want``, ``start``, ``drain``, ``fileno``,
    ``describe`` and ``stop`` are called from the owner's thread (one thread).
    Everything else runs on the client's daemon thread, which never calls
    back into the owner except through ``approval`` / ``drop_approval``
    (run on a worker thread of its own, so a slow HTTP call never stalls the
    session). ``fileno()`` is the read end of an ``os.pipe``: it is readable
    while events wait; ``drain()`` returns them and never blocks. Ticks and
    books beyond ``max_queued`` waiting events are dropped (counted, and
    reported once per episode); notices and state events never are.
    ``stop()`` must be called by the owner (unregister ``fileno()`` from the
    poller first): it ends the session, joins the thread, closes the pipe and
    is idempotent; events still waiting can be drained after it; a stopped
    client does not start again.
    """

    def __init__(self, ws_url: str, *, hts_id: str, approval: Callable[[], str], drop_approval: Callable[[], None],
                 env: Literal["demo", "real"] = "demo", max_registrations: int = MAX_REGISTRATIONS,
                 backoff: Backoff = Backoff(), heartbeat_timeout_s: float = 120.0, ack_timeout_s: float = 10.0,
                 healthy_s: float = 60.0, requests_per_s: float = 10.0, open_timeout_s: float = 10.0,
                 max_queued: int = 200_000, seed: int | None = None) -> None:
        try:
            parse_uri(ws_url)
        except InvalidURI as exc:
            raise ValueError(f"ws_url {ws_url!r} is not a WebSocket URL: {exc}") from None
        if not hts_id:
            raise ValueError("hts_id is needed: execution notices are subscribed with it")
        if not 1 <= max_registrations <= MAX_REGISTRATIONS:
            raise ValueError(f"max_registrations must be 1..{MAX_REGISTRATIONS}, not {max_registrations}")
        if requests_per_s <= 0:
            raise ValueError("requests_per_s must be > 0")
        self._url = ws_url
        self._hts_id = hts_id
        self._approval = approval
        self._drop_approval = drop_approval
        self._notice: Registration = (NOTICE_TRS[env], hts_id)
        self._max_registrations = max_registrations
        self._server_cap: int | None = None  # learned from an OPSP0008 below our own limit
        self._backoff = backoff
        self._heartbeat_timeout_s = heartbeat_timeout_s
        self._ack_timeout_s = ack_timeout_s
        self._healthy_s = healthy_s
        self._spacing_s = 1.0 / requests_per_s
        self._open_timeout_s = open_timeout_s
        self._max_queued = max_queued
        self._rng = random.Random(seed)

        self._codes: tuple[str, ...] = ()
        self._state = StreamState.DISCONNECTED
        self._failures = 0
        self._last_backoff_s = 0.0
        self._settled_sessions = 0
        self._counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._view: dict[str, Any] = {"subscribed": {}, "streamed": (), "books": ()}
        self._last_problem: StreamProblem | None = None
        self._reported: dict[str, tuple[float, int]] = {}  # kind -> (last reported at, suppressed since)

        self._lock = threading.Lock()  # guards the event queue and the pipe's armed flag
        self._events: deque[Event] = deque()
        self._armed = False
        self._overflowing = False
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_event: asyncio.Event | None = None
        self._session: _Session | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kis-stream-approval")
        self._stopped = False

    # --- the owner's side --------------------------------------------------------------------

    def want(self, codes: Sequence[str]) -> None:
        """The codes to stream, most important first (duplicates ignored); takes effect at once if connected."""
        clean = tuple(dict.fromkeys(codes))
        bad = [c for c in clean if not CODE_RE.match(c)]
        if bad:
            raise ValueError(f"not stock codes: {', '.join(map(repr, bad[:5]))}")
        self._codes = clean
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(self._replan)

    def start(self) -> None:
        """Start the session thread (it connects, subscribes and reconnects by itself)."""
        if self._stopped or self._thread is not None:
            raise RuntimeError("a StreamClient starts once")
        self._loop = asyncio.new_event_loop()
        self._stop_event = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="kis-stream", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """End the session (a close frame), join the thread, close the pipe; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is not None and loop is not None and stop_event is not None:
            with suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop_event.set)
            thread.join(timeout_s)
            if thread.is_alive():
                _log.error("the KIS stream thread did not end within %.1f s", timeout_s)
        self._worker.shutdown(wait=False, cancel_futures=True)
        if self._state is not StreamState.DISCONNECTED:
            self._set_state(StreamState.DISCONNECTED, "stopped")
        self._view = {"subscribed": {}, "streamed": (), "books": ()}
        with self._lock:
            os.close(self._wfd)
            os.close(self._rfd)
            self._rfd = self._wfd = -1

    def fileno(self) -> int:
        """The read end of the wake-up pipe: readable while events wait (for a ``zmq.Poller`` or ``select``)."""
        if self._rfd < 0:
            raise ValueError("the stream client is stopped")
        return self._rfd

    def drain(self) -> list[Event]:
        """Every event waiting, oldest first; never blocks."""
        with self._lock:
            events = list(self._events)
            self._events.clear()
            self._armed = False
            self._overflowing = False
            if self._rfd >= 0:
                with suppress(BlockingIOError):
                    while os.read(self._rfd, 4096):
                        pass
        return events

    def describe(self) -> dict[str, Any]:
        """State, attempts, registrations, streamed and polled codes, counters: plain values for a status page."""
        view = self._view
        streamed = set(view["streamed"])
        problem = self._last_problem
        return {
            "state": self._state.value,
            "url": self._url,
            "attempts": self._counters["attempts"],
            "backoff_step": self._failures,
            "last_backoff_s": round(self._last_backoff_s, 3),
            "notice_tr": self._notice[0],
            "registration_limit": min(self._max_registrations, self._server_cap or MAX_REGISTRATIONS),
            "subscribed": {tr: list(keys) for tr, keys in view["subscribed"].items()},
            "streamed": list(view["streamed"]),
            "books": list(view["books"]),
            "polled": [c for c in self._codes if c not in streamed],
            "counters": dict(self._counters),
            "last_problem": None if problem is None else {"kind": problem.kind, "text": problem.text},
        }

    # --- events (any thread) ---------------------------------------------------------------------

    def _emit(self, events: Sequence[Event], *, droppable: bool = False) -> None:
        overflow = False
        with self._lock:
            if droppable and len(self._events) + len(events) > self._max_queued:
                self._counters["events_dropped"] += len(events)
                overflow, self._overflowing = not self._overflowing, True
            else:
                self._events.extend(events)
            if overflow:
                self._events.append(StreamProblem("queue_full", f"more than {self._max_queued} events waiting: "
                                                                "ticks and books dropped until drained"))
            if not self._armed and self._events and self._wfd >= 0:
                self._armed = True
                with suppress(BlockingIOError):  # full: readable anyway
                    os.write(self._wfd, b"\x00")

    def _set_state(self, new: StreamState, why: str) -> None:
        old = self._state
        if new is old:
            return
        self._state = new
        log = _log.warning if new in (StreamState.DISCONNECTED, StreamState.BLOCKED) and why != "stopped" \
            else _log.info
        log("KIS stream %s -> %s: %s", old.value, new.value, why)
        self._emit([StateChange(old, new, why)])

    def _problem(self, kind: str, text: str, *, log: bool = True) -> None:
        """Report a problem to the owner, at most one of a kind per REPORT_INTERVAL_S (the rest counted).

        ``log`` False when a state change logs the same thing already.
        """
        self._counters["problems"] += 1
        now = time.monotonic()
        last, suppressed = self._reported.get(kind, (float("-inf"), 0))
        if now - last < REPORT_INTERVAL_S:
            self._counters["problems_suppressed"] += 1
            self._reported[kind] = (last, suppressed + 1)
            return
        if suppressed:
            text = f"{text} ({suppressed} more since the last report)"
        self._reported[kind] = (now, 0)
        problem = StreamProblem(kind, text)
        self._last_problem = problem
        if log:
            _log.warning("KIS stream problem %s: %s", kind, text)
        self._emit([problem])

    # --- the loop thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        except Exception as exc:  # a bug: reported, never a silent dead thread
            _log.exception("the KIS stream thread failed")
            self._problem("crashed", f"the stream thread failed: {type(exc).__name__}: {exc}")
            self._set_state(StreamState.DISCONNECTED, f"stream thread failed: {exc}")
        finally:
            with suppress(RuntimeError):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        stop = self._stop_event
        assert stop is not None
        self._set_state(StreamState.RECONNECTING, "connecting")
        while not stop.is_set():
            attempt = asyncio.ensure_future(self._attempt())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({attempt, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not attempt.done():
                attempt.cancel()
                with suppress(asyncio.CancelledError):
                    await attempt
                break
            stopper.cancel()
            delay = self._after_attempt(attempt.result())
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    def _after_attempt(self, result: tuple[_Ending, float | None]) -> float:
        """Account for an ended attempt: the state it leaves, and the seconds to wait before the next one."""
        ending, connected_s = result
        if connected_s is not None and time.monotonic() - connected_s >= self._healthy_s:
            self._failures = 0
        self._failures += 1
        draw = self._rng.random()
        if ending.kind == "blocked":
            delay = self._backoff.cap_delay_s(draw)
            self._problem("appkey_in_use", ending.text, log=self._state is StreamState.BLOCKED)
            self._set_state(StreamState.BLOCKED, f"{ending.text}; next try in {delay:.1f} s")
        else:
            delay = self._backoff.delay_s(self._failures, draw)
            self._problem(ending.kind, ending.text, log=self._state is not StreamState.CONNECTED)
            if self._state is StreamState.CONNECTED:
                self._set_state(StreamState.DISCONNECTED, ending.text)
            self._set_state(StreamState.RECONNECTING, f"attempt {self._counters['attempts'] + 1} in {delay:.1f} s")
        self._last_backoff_s = delay
        return delay

    async def _attempt(self) -> tuple[_Ending, float | None]:
        """One connection from approval key to its end; (why it ended, when it was connected or None)."""
        self._counters["attempts"] += 1
        loop = asyncio.get_running_loop()
        try:
            approval_key = await loop.run_in_executor(self._worker, self._approval)
        except Exception as exc:  # the owner's callable (an HTTP call): any failure is a failed attempt
            return _Ending("approval", f"no approval key: {type(exc).__name__}: {exc}"), None
        if not isinstance(approval_key, str) or not approval_key:
            return _Ending("approval", "the approval callable gave no key"), None
        try:
            ws = await connect(self._url, open_timeout=self._open_timeout_s, ping_interval=None,
                               close_timeout=CLOSE_TIMEOUT_S, compression=None, proxy=None, max_size=2**20)
        except (OSError, asyncio.TimeoutError, WebSocketException) as exc:
            return _Ending("connect", f"cannot connect to {self._url}: {type(exc).__name__}: {exc}"), None
        self._counters["sessions"] += 1
        now = time.monotonic()
        session = _Session(ws, approval_key, opened_s=now, last_frame_s=now)
        self._session = session
        tasks = [asyncio.ensure_future(c) for c in (self._read(session), self._send(session), self._watch(session))]
        for task in tasks:
            task.add_done_callback(lambda t, s=session: self._task_done(t, s))
        try:
            ending = await session.ended
        finally:
            self._session = None
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await ws.close()
            self._publish_view(None)
        if ending.kind == "approval_refused":
            try:
                await loop.run_in_executor(self._worker, self._drop_approval)
            except Exception as exc:  # the owner's callable: reported, and the next attempt asks again anyway
                self._problem("approval", f"drop_approval failed: {type(exc).__name__}: {exc}")
        return ending, session.connected_s

    def _task_done(self, task: asyncio.Future[None], session: _Session) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            _log.error("KIS stream session task failed", exc_info=exc)
            session.end("error", f"{type(exc).__name__}: {exc}")

    # --- a session's three tasks ------------------------------------------------------------------

    async def _read(self, s: _Session) -> None:
        """Every frame the server sends, until the connection ends."""
        try:
            while True:
                message = await s.ws.recv()
                s.last_frame_s = time.monotonic()
                self._counters["frames"] += 1
                text = message if isinstance(message, str) else message.decode("utf-8", errors="replace")
                await self._on_frame(s, text)
        except ConnectionClosed as exc:
            s.end("closed", self._closed_text(s, exc))

    def _closed_text(self, s: _Session, exc: ConnectionClosed) -> str:
        if exc.rcvd is not None:
            text = f"closed by the server ({exc.rcvd.code} {exc.rcvd.reason or 'no reason'})".strip()
        elif exc.sent is not None:
            text = f"closed by us ({exc.sent.code} {exc.sent.reason})"
        else:
            text = "connection dropped without a close frame"
            if self._notice in s.inflight:  # KIS.md 7.8: a wrong HTS id ends so
                text += " on the notice subscription (is the HTS id right?)"
        return text

    async def _on_frame(self, s: _Session, text: str) -> None:
        try:
            parsed = parse_message(text, s.keys)
        except StreamBadFrame as bad:
            self._counters["bad_frames"] += 1
            self._problem("bad_frame", f"{bad.tr_id or '?'}: {bad.reason}")
            return
        if isinstance(parsed, Control):
            if parsed.ack is Ack.HEARTBEAT:
                self._counters["pingpongs"] += 1
                await s.ws.send(text)  # the echo keeps the session (KIS.md 6.4)
            else:
                self._on_ack(s, parsed)
            return
        self._deliver(parsed)

    def _deliver(self, records: list[Record]) -> None:
        market: list[Event] = []
        notices: list[Event] = []
        for r in records:
            if isinstance(r, TickRecord):
                self._counters["ticks"] += 1
                market.append(r)
            elif isinstance(r, BookRecord):
                self._counters["books"] += 1
                market.append(r)
            elif r.cust_id != self._hts_id:  # KIS routes notices by CUST_ID (KIS.md 12)
                self._counters["foreign_notices"] += 1
                self._problem("foreign_notice", f"a notice for another customer id (order {r.odno}) left out")
            else:
                self._counters["notices"] += 1
                notices.append(r)
        if market:
            self._emit(market, droppable=True)
        if notices:
            self._emit(notices)

    def _on_ack(self, s: _Session, ack: Control) -> None:
        self._counters["acks"] += 1
        reg = (ack.tr_id, ack.tr_key)
        said = f"{ack.msg_cd} {ack.msg1}".strip()
        outcome = ack.ack
        if outcome is Ack.APPKEY_IN_USE:
            s.end("blocked", f"{said}: another session holds the app key")
            return
        if outcome is Ack.APPROVAL_REFUSED:
            s.end("approval_refused", f"approval key refused ({said}); a new one is asked for")
            return
        request = s.inflight.pop(reg, None)
        if request is None:
            # An ack for nothing asked, or one without its tr_key (the server's "too many requests").
            self._problem("unexpected_ack", f"{said} for {reg[0] or '?'} {self._shown(reg)}".strip())
            return
        tr_type = request[0]
        if outcome is Ack.RETRY_LATER:
            s.retry_at[reg] = time.monotonic() + RETRY_LATER_S
            self._problem("server_busy", f"{said} for {reg[0]} {self._shown(reg)}; again in {RETRY_LATER_S:.0f} s")
        elif tr_type == UNSUBSCRIBE:
            s.active.discard(reg)  # OPSP0001, or OPSP0003 not found: gone either way
        elif outcome is Ack.SUBSCRIBED:
            s.active.add(reg)
            if ack.aes is not None:
                s.keys[reg[0]] = ack.aes  # the latest ack's key: whether it changes per session is UNCONFIRMED
        elif outcome is Ack.LIMIT_REACHED:
            self._counters["limit_refusals"] += 1
            self._server_cap = len(s.active)
            self._problem("registration_limit", f"{said} at {len(s.active)} registrations (ours: "
                                                f"{self._max_registrations}); the rest is polled")
        else:
            s.refused.add(reg)
            self._problem("subscribe_refused", f"{said} for {reg[0]} {self._shown(reg)}")
        s.wake.set()
        self._after_change(s)

    def _shown(self, reg: Registration) -> str:
        """A registration's key fit for logs: the HTS id is a credential."""
        return "(HTS id)" if reg == self._notice else reg[1]

    async def _send(self, s: _Session) -> None:
        """Send the registrations the plan lacks and the unregistrations it no longer wants, paced."""
        while True:
            request, retry_in = self._next_request(s)
            if request is None:
                s.wake.clear()
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(s.wake.wait(), retry_in)
                continue
            gap = s.last_sent_s + self._spacing_s - time.monotonic()
            if gap > 0:
                await asyncio.sleep(gap)
                continue
            reg, tr_type = request
            s.inflight[reg] = (tr_type, time.monotonic())
            s.last_sent_s = time.monotonic()
            self._counters["registrations_sent" if tr_type == SUBSCRIBE else "unregistrations_sent"] += 1
            try:
                await s.ws.send(subscribe_message(s.approval_key, reg, tr_type))
            except ConnectionClosed:
                return  # the reader reports how it ended

    def _target(self, s: _Session) -> list[Registration]:
        """The registrations this session should hold: the wished ones not refused, as many as the limit."""
        cap = min(self._max_registrations, self._server_cap or MAX_REGISTRATIONS)
        wished = wished_registrations(self._notice, self._codes)
        return [r for r in wished if r not in s.refused][:cap]

    def _next_request(self, s: _Session) -> tuple[tuple[Registration, str] | None, float | None]:
        """The next request to send, or None and the seconds until a retry falls due (None: wait for news)."""
        target = self._target(s)
        wanted = set(target)
        for reg in s.active:
            if reg not in wanted and reg not in s.inflight:
                return (reg, UNSUBSCRIBE), None
        cap = min(self._max_registrations, self._server_cap or MAX_REGISTRATIONS)
        held = len(s.active) + sum(1 for tr_type, _ in s.inflight.values() if tr_type == SUBSCRIBE)
        now = time.monotonic()
        soonest: float | None = None
        for reg in target:
            if reg in s.active or reg in s.inflight:
                continue
            due = s.retry_at.get(reg, 0.0)
            if due > now:
                soonest = due if soonest is None else min(soonest, due)
                continue
            if held >= cap:  # what is being unregistered still counts at the server until its ack
                break
            return (reg, SUBSCRIBE), None
        return None, None if soonest is None else max(0.0, soonest - now)

    async def _watch(self, s: _Session) -> None:
        """End a session whose server went quiet or left a request unanswered."""
        tick = min(0.25, self._heartbeat_timeout_s / 4, self._ack_timeout_s / 4)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            quiet = now - s.last_frame_s
            if quiet > self._heartbeat_timeout_s:
                s.end("heartbeat", f"no frame (not even PINGPONG) for {quiet:.1f} s")
                return
            for reg, (tr_type, sent_s) in s.inflight.items():
                if now - sent_s > self._ack_timeout_s:
                    what = "registration" if tr_type == SUBSCRIBE else "unregistration"
                    s.end("ack_timeout", f"{what} of {reg[0]} {self._shown(reg)} unanswered for "
                                         f"{self._ack_timeout_s:.0f} s")
                    return

    # --- plan changes and the connected state -----------------------------------------------------

    def _replan(self) -> None:
        """On the loop: the owner's wanted codes changed."""
        s = self._session
        if s is not None:
            s.wake.set()
            self._after_change(s)
        else:
            self._publish_view(None)

    def _after_change(self, s: _Session) -> None:
        """Publish what is registered; once the execution notices are, the session is connected.

        Notices are what trading needs (fills and cancels must not be missed): the
        owner may catch up and trade as soon as they flow, while ticks and books
        are still being registered (paced), which takes seconds for many codes.
        """
        self._publish_view(s)
        if s.connected_s is not None or self._notice not in s.active:
            return
        s.connected_s = time.monotonic()
        self._settled_sessions += 1
        view = self._view
        self._set_state(StreamState.CONNECTED, f"{len(s.active)} registrations active")
        streamed = tuple(view["streamed"])
        self._emit([Resubscribed(self._settled_sessions, streamed, tuple(c for c in self._codes
                                                                          if c not in set(streamed)))])

    def _publish_view(self, s: _Session | None) -> None:
        """A snapshot for ``describe`` (swapped in whole: the owner's thread reads it)."""
        if s is None:
            self._view = {"subscribed": {}, "streamed": (), "books": ()}
            return
        subscribed: dict[str, list[str]] = {}
        for tr, key in sorted(s.active):
            subscribed.setdefault(tr, []).append("(HTS id)" if (tr, key) == self._notice else key)
        ticks = {key for tr, key in s.active if tr == TICK_TR}
        books = {key for tr, key in s.active if tr == BOOK_TR}
        self._view = {"subscribed": subscribed, "streamed": tuple(c for c in self._codes if c in ticks),
                      "books": tuple(c for c in self._codes if c in books)}
