"""KIS's real-time WebSocket: sessions, subscriptions, PINGPONG, and the frames sent to each subscriber.

One ``Stream`` serves every connection (any path: the bare base URL and
``/tryitout[/<TR>]`` alike, since clients use both; KIS.md section 12):

* the approval key in each request's header must be live (OPSP0011 otherwise);
  the first valid request binds the session to that app key, and a second
  session for an app key already in use is answered OPSP8996 and closed;
* register / unregister (``tr_type`` "1" / "2") are acknowledged with KIS's
  codes: OPSP0000 with ``key`` and ``iv``, OPSP0001, OPSP0002 already
  subscribed, OPSP0003 not found, OPSP0008 past 41 registrations, OPSP8991 /
  OPSP8992 for a bad TR id or a malformed stock code (a listed code the paper
  market does not simulate is accepted and stays quiet), OPSP99xx for malformed JSON;
* a notice subscription whose ``tr_key`` is not the account's HTS id ends the
  connection without a close frame, as KIS does ("No close frame received");
* PINGPONG goes out every ``ping_interval_s``; a PONG control frame or the
  text echoed back keeps the session, neither within ``pong_timeout_s`` closes
  it (the real timeout is UNCONFIRMED: configurable);
* each session has a bounded outbound queue written by its own task, so a slow
  client loses frames (counted) instead of stalling the market; a client that
  floods requests past ``max_requests_per_s`` is told so once a second and
  closed at five times the limit.

AES keys: whether KIS changes them per session or per subscription is
UNCONFIRMED; per session by default (``key_per_subscription`` for the other).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from core.krx import CODE_RE
from services.kis_sim.auth import TokenBook
from services.kis_sim.credentials import Credentials
from services.kis_sim.flavour import BOOK_TR, TICK_TR, Flavour
from services.kis_sim.frames import MAX_RECORDS_PER_FRAME, control, data_frame, pingpong
from services.kis_sim.notices import encrypt, new_key_iv

MAX_REGISTRATIONS = 41
QUEUE_FRAMES = 10_000
_log = logging.getLogger("kis_sim.stream")


class PongAwareConnection(ServerConnection):
    """A server connection that tells its session about every PONG frame (unsolicited ones included)."""

    on_pong: Callable[[bytes], None] | None = None

    def acknowledge_pings(self, data: bytes) -> None:
        if self.on_pong is not None:
            self.on_pong(data)
        super().acknowledge_pings(data)


@dataclass(frozen=True, slots=True)
class StreamRules:
    ping_interval_s: float = 5.0
    pong_timeout_s: float = 30.0
    max_requests_per_s: int = 20
    tick_fields: int = 47
    book_fields: int = 63
    key_per_subscription: bool = False


@dataclass(eq=False)
class Session:
    """One WebSocket connection."""

    ws: ServerConnection
    key: str
    iv: str
    appkey: str | None = None
    subs: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)  # (tr_id, tr_key) -> (key, iv)
    queue: asyncio.Queue[tuple[str, asyncio.Future[None] | None]] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_FRAMES))
    ping_sent_s: float | None = None  # an unanswered PINGPONG
    requests: deque[float] = field(default_factory=deque)
    warned_s: float = 0.0
    dropped: int = 0

    def put(self, frame: str, sent: asyncio.Future[None] | None = None) -> None:
        try:
            self.queue.put_nowait((frame, sent))
        except asyncio.QueueFull:
            self.dropped += 1
            if sent is not None and not sent.done():
                sent.set_result(None)


class Stream:
    """All sessions of the WebSocket server and what they subscribed to."""

    def __init__(self, book: TokenBook, flavour: Flavour, creds: Credentials, rules: StreamRules,
                 wall_s: Callable[[], float], codes: set[str]) -> None:
        self.book = book
        self.codes = codes  # what a tick or book subscription may name
        self.flavour = flavour
        self.creds = creds
        self.rules = rules
        self.wall_s = wall_s
        self.sessions: set[Session] = set()
        self.by_appkey: dict[str, Session] = {}
        self.frames_sent = 0
        self.on_subscriptions_changed: Callable[[], None] = lambda: None

    # --- who wants what ------------------------------------------------------------------

    def wanted(self, tr_id: str) -> set[str]:
        return {k for s in self.sessions for (t, k) in s.subs if t == tr_id}

    # --- a connection ----------------------------------------------------------------------

    async def handle(self, ws: ServerConnection) -> None:
        key, iv = new_key_iv()
        session = Session(ws, key, iv)
        if isinstance(ws, PongAwareConnection):
            ws.on_pong = lambda data: self._pong(session)
        self.sessions.add(session)
        writer = asyncio.create_task(self._writer(session))
        heart = asyncio.create_task(self._heartbeat(session))
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    message = message.decode("utf-8", errors="replace")
                if '"PINGPONG"' in message[:64]:
                    session.ping_sent_s = None  # the text echo of our heartbeat (not counted as a request)
                    continue
                if not self._admit(session):
                    continue
                self._request(session, message)
        except ConnectionClosed:
            pass
        finally:
            heart.cancel()
            writer.cancel()
            self.sessions.discard(session)
            if session.appkey is not None and self.by_appkey.get(session.appkey) is session:
                del self.by_appkey[session.appkey]
            if session.subs:
                self.on_subscriptions_changed()

    async def _writer(self, session: Session) -> None:
        ws = session.ws
        while True:
            frame, sent = await session.queue.get()
            try:
                await ws.send(frame)
                self.frames_sent += 1
            except ConnectionClosed:
                if sent is not None and not sent.done():
                    sent.set_result(None)
                return
            if sent is not None and not sent.done():
                sent.set_result(None)

    async def _heartbeat(self, session: Session) -> None:
        rules = self.rules
        while True:
            await asyncio.sleep(rules.ping_interval_s)
            now = time.monotonic()
            if session.ping_sent_s is not None and now - session.ping_sent_s > rules.pong_timeout_s:
                _log.info("session closed: no answer to PINGPONG within %.1f s", rules.pong_timeout_s)
                await session.ws.close(1000, "PINGPONG timeout")
                return
            if session.ping_sent_s is None:
                session.ping_sent_s = now
            session.put(pingpong(self.wall_s()))

    def _pong(self, session: Session) -> None:
        session.ping_sent_s = None

    def _admit(self, session: Session) -> bool:
        """Count a request; False (and a warning, or the end of the session) for a flood."""
        now = time.monotonic()
        q = session.requests
        q.append(now)
        while q and q[0] <= now - 1.0:
            q.popleft()
        limit = self.rules.max_requests_per_s
        if len(q) <= limit:
            return True
        if len(q) > 5 * limit:
            asyncio.ensure_future(session.ws.close(1008, "too many requests"))
        elif now - session.warned_s >= 1.0:
            session.warned_s = now
            session.put(control("", "", "1", "OPSP0007", "SUBSCRIBE INTERNAL ERROR : too many requests"))
        return False

    # --- requests ----------------------------------------------------------------------------

    def _request(self, session: Session, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            session.put(control("", "", "9", "OPSP9999", "JSON PARSING ERROR : invalid json format"))
            return
        if not isinstance(msg, dict):
            session.put(control("", "", "9", "OPSP9999", "JSON PARSING ERROR : invalid json format"))
            return
        header = msg.get("header")
        if isinstance(header, dict) and header.get("tr_id") == "PINGPONG":
            session.ping_sent_s = None  # the text echo of our heartbeat
            return
        if not isinstance(header, dict):
            session.put(control("", "", "9", "OPSP9998", "JSON PARSING ERROR : header not found"))
            return
        body = msg.get("body")
        if not isinstance(body, dict):
            session.put(control("", "", "9", "OPSP9992", "JSON PARSING ERROR : body not found"))
            return
        inp = body.get("input")
        if not isinstance(inp, dict):
            session.put(control("", "", "9", "OPSP9991", "JSON PARSING ERROR : input not found"))
            return
        tr_id, tr_key = str(inp.get("tr_id", "")), str(inp.get("tr_key", ""))
        appkey = self.book.approval_owner(str(header.get("approval_key", "")), self.wall_s())
        if appkey is None:
            session.put(control(tr_id, tr_key, "1", "OPSP0011", "invalid approval : NOT FOUND"))
            return
        if session.appkey is None:
            holder = self.by_appkey.get(appkey)
            if holder is not None and holder is not session:
                session.put(control(tr_id, tr_key, "9", "OPSP8996", "ALREADY IN USE appkey"))
                asyncio.ensure_future(self._close_after_flush(session, 1008, "ALREADY IN USE appkey"))
                return
            session.appkey = appkey
            self.by_appkey[appkey] = session
        custtype = header.get("custtype")
        if custtype is None:
            session.put(control(tr_id, tr_key, "9", "OPSP9997", "JSON PARSING ERROR : custtype not found"))
            return
        if custtype not in ("P", "B"):
            session.put(control(tr_id, tr_key, "9", "OPSP8998", "JSON PARSING ERROR : invalid custtype"))
            return
        tr_type = header.get("tr_type")
        if tr_type not in ("1", "2"):
            session.put(control(tr_id, tr_key, "9", "OPSP8997", "JSON PARSING ERROR : invalid tr_type"))
            return
        notice_tr = self.flavour.notice_tr
        if tr_id not in (TICK_TR, BOOK_TR, notice_tr):
            session.put(control(tr_id, tr_key, "1", "OPSP8991", "SUBSCRIBE ERROR : invalid tr_id"))
            return
        if tr_id == notice_tr:
            if tr_key != self.creds.hts_id:
                session.ws.transport.abort()  # KIS drops it: "No close frame received"
                return
        elif not CODE_RE.match(tr_key):
            session.put(control(tr_id, tr_key, "1", "OPSP8992", "SUBSCRIBE ERROR : invalid tr_key"))
            return
        encrypt_flag = "Y" if tr_id == notice_tr else "N"
        sub = (tr_id, tr_key)
        if tr_type == "2":
            if sub not in session.subs:
                session.put(control(tr_id, tr_key, "1", "OPSP0003", "UNSUBSCRIBE ERROR(not found!)", encrypt=encrypt_flag))
                return
            del session.subs[sub]
            session.put(control(tr_id, tr_key, "0", "OPSP0001", "UNSUBSCRIBE SUCCESS", encrypt=encrypt_flag))
            self.on_subscriptions_changed()
            return
        if sub in session.subs:
            key, iv = session.subs[sub]
            session.put(control(tr_id, tr_key, "1", "OPSP0002", "ALREADY IN SUBSCRIBE", {"iv": iv, "key": key},
                                encrypt=encrypt_flag))
            return
        if len(session.subs) >= MAX_REGISTRATIONS:
            session.put(control(tr_id, tr_key, "1", "OPSP0008", "MAX SUBSCRIBE OVER", encrypt=encrypt_flag))
            return
        key, iv = new_key_iv() if self.rules.key_per_subscription else (session.key, session.iv)
        session.subs[sub] = (key, iv)
        session.put(control(tr_id, tr_key, "0", "OPSP0000", "SUBSCRIBE SUCCESS", {"iv": iv, "key": key},
                            encrypt=encrypt_flag))
        self.on_subscriptions_changed()

    async def _close_after_flush(self, session: Session, code: int, reason: str) -> None:
        await asyncio.sleep(0.05)
        await session.ws.close(code, reason)

    # --- publishing -------------------------------------------------------------------------

    def publish_records(self, tr_id: str, by_code: dict[str, list[str]]) -> None:
        """Send each code's records to its subscribers, several records per frame when there are several."""
        if not by_code:
            return
        frames: dict[str, list[str]] = {}
        for code, records in by_code.items():
            frames[code] = [data_frame(tr_id, records[i:i + MAX_RECORDS_PER_FRAME])
                            for i in range(0, len(records), MAX_RECORDS_PER_FRAME)]
        for session in self.sessions:
            for (t, k) in session.subs:
                if t == tr_id and k in frames:
                    for frame in frames[k]:
                        session.put(frame)

    def publish_notices(self, records: list[str], *, wait: bool = False) -> list[asyncio.Future[None]]:
        """Encrypt and send notice records to the session that subscribed to the account's notices."""
        sub = (self.flavour.notice_tr, self.creds.hts_id)
        waits: list[asyncio.Future[None]] = []
        loop = asyncio.get_running_loop() if wait else None
        for session in self.sessions:
            keys = session.subs.get(sub)
            if keys is None:
                continue
            key, iv = keys
            for record in records:
                sent = loop.create_future() if loop is not None else None
                session.put(f"1|{sub[0]}|001|{encrypt(record, key, iv)}", sent)
                if sent is not None:
                    waits.append(sent)
        return waits

    async def drop_all(self, *, abort: bool = False) -> int:
        """End every session (a close frame, or a dropped connection with ``abort``)."""
        sessions = list(self.sessions)
        for session in sessions:
            if abort:
                session.ws.transport.abort()
            else:
                await session.ws.close(1001, "server closed the session")
        return len(sessions)

    def describe(self) -> dict[str, Any]:
        return {"sessions": len(self.sessions), "frames_sent": self.frames_sent,
                "frames_dropped": sum(s.dropped for s in self.sessions),
                "subscriptions": sum(len(s.subs) for s in self.sessions)}
