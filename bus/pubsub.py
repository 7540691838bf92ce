"""Publish and subscribe on the bus, with per-stream sequence numbers and gap detection.

A :class:`Publisher` numbers the messages it sends on each topic 1, 2, 3, ...;
a :class:`Subscriber` checks those numbers per (sender, topic) stream. A PUB
socket drops silently at its high-water mark, so a gap is expected, counted and
reported, never assumed away: ``on_gap(sender, topic, first_missing,
last_missing)`` is the recoverable event of the zguide Clone pattern (the caller
fetches a snapshot and carries on).

Drops after the last message a subscriber received show up through heartbeats:
every ``Heartbeat`` carries the publisher's per-topic last sequence numbers in
``info["seqs"]``, so a subscriber that sees a heartbeat whose number for a
stream is beyond what it received counts that tail as missed. A subscriber
listens to ``sys.heartbeat.`` for this even when the caller did not ask for
heartbeats (or, given ``heartbeats_from``, only to the heartbeats of the senders
named there, the publishers of its topics); those are consumed silently.
"""

from __future__ import annotations

import logging
import time
from time import time_ns
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping

import zmq

from bus import security
from bus.codec import BAD_ENVELOPE, DecodeError, Envelope, decode, encode_with_prefix, topic_prefix
from core.messages import REGISTRY, Heartbeat, Message

HEARTBEAT_TOPIC_PREFIX = "sys.heartbeat."
HEARTBEAT_SEQS_KEY = "seqs"
DEFAULT_HWM = 100_000
DEFAULT_LINGER_MS = 200
MAX_SEQ = 2**63 - 1  # sequence numbers are positive 64-bit integers
# A forward jump beyond this is a new stream, not a gap: a garbled or hostile sequence
# number must not count 2**63 messages as missed.
MAX_GAP = 2**32
# Senders whose sequence numbers a subscriber remembers: made-up sender names must not grow memory
# without limit, so the least recently heard sender is forgotten beyond this.
MAX_SENDERS = 10_000

GapCallback = Callable[[str, str, int, int], None]
RestartCallback = Callable[[str], None]

log = logging.getLogger("bus.pubsub")


class Publisher:
    """Sends messages on topics, numbering each topic's stream without gaps."""

    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str,
        sender: str,
        *,
        bind: bool = False,
        sndhwm: int = DEFAULT_HWM,
        linger_ms: int = DEFAULT_LINGER_MS,
    ) -> None:
        self.sender = sender
        self.endpoint = endpoint
        self.socket: zmq.Socket = ctx.socket(zmq.PUB)
        self.socket.setsockopt(zmq.SNDHWM, sndhwm)
        self.socket.setsockopt(zmq.LINGER, linger_ms)
        if bind:
            security.bind(self.socket, endpoint)
        else:
            security.connect(self.socket, endpoint)
        self.last_seq = 0  # messages published on all topics together
        self._streams: dict[str, list] = {}  # topic -> [prefix bytes, last seq]
        self._send = self.socket.send

    def publish(self, topic: str, msg: Message, ts_ns: int | None = None) -> int:
        """Send ``msg`` on ``topic``; returns its sequence number within the topic.

        ``ts_ns`` (the header's time, default now): a relay passes on the time its source published the message.
        """
        stream = self._streams.get(topic)
        if stream is None:
            if msg.__class__.TYPE not in REGISTRY:
                raise TypeError(f"{msg.__class__.__name__} is not a registered message type")
            stream = self._streams[topic] = [topic_prefix(topic), 0]
        seq = stream[1] + 1
        self._send(encode_with_prefix(stream[0], self.sender, seq, time_ns() if ts_ns is None else ts_ns, msg))
        stream[1] = seq
        self.last_seq += 1
        return seq

    def topic_seqs(self) -> dict[str, int]:
        """The last sequence number sent on each topic (what a heartbeat announces)."""
        return {topic: stream[1] for topic, stream in self._streams.items()}

    def heartbeat_info(self) -> dict[str, dict[str, int]]:
        """The ``Heartbeat.info`` entry that lets subscribers detect tail drops."""
        return {HEARTBEAT_SEQS_KEY: self.topic_seqs()}

    def close(self) -> None:
        """Close the socket (its LINGER bounds how long unsent frames are kept)."""
        self.socket.close()


class Subscriber:
    """Receives and validates messages on topic prefixes, counting rejects and gaps."""

    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str,
        topics: list[str],
        *,
        rcvhwm: int = DEFAULT_HWM,
        linger_ms: int = DEFAULT_LINGER_MS,
        bind: bool = False,
        on_gap: GapCallback | None = None,
        heartbeats_from: tuple[str, ...] | list[str] | None = None,
        on_restart: RestartCallback | None = None,
    ) -> None:
        """``heartbeats_from`` names the senders whose heartbeats are listened to for tail drops
        (the publishers of ``topics``); None listens to every heartbeat. Naming them spares a
        process the wake-ups for every other process's heartbeat each second.

        ``on_restart(sender)`` is called when a sender's heartbeat comes from another process
        than before: what the old one published last (after its last heartbeat, or never sent
        at all when it was killed) cannot be counted as a gap, so a subscriber that must not
        miss anything of it (an agent's own order events) re-synchronises then."""
        self.endpoint = endpoint
        self.topics = tuple(topics)
        self.on_gap = on_gap
        self.on_restart = on_restart
        self._pids: dict[str, int] = {}
        self.socket: zmq.Socket = ctx.socket(zmq.SUB)
        self.socket.setsockopt(zmq.RCVHWM, rcvhwm)
        self.socket.setsockopt(zmq.LINGER, linger_ms)
        for topic in self.topics:
            self.socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        # Heartbeats reveal tail drops; listen to them even if the caller did not ask.
        self._hidden_heartbeats = not any(HEARTBEAT_TOPIC_PREFIX.startswith(t) for t in self.topics)
        if self._hidden_heartbeats:
            if heartbeats_from is None:
                self.socket.setsockopt(zmq.SUBSCRIBE, HEARTBEAT_TOPIC_PREFIX.encode())
            for sender in heartbeats_from or ():
                # the whole topic and its separator: ``market-data`` must not also match ``market-data-2``
                self.socket.setsockopt(zmq.SUBSCRIBE, topic_prefix(HEARTBEAT_TOPIC_PREFIX + sender))
        if bind:
            security.bind(self.socket, endpoint)
        else:
            security.connect(self.socket, endpoint)
        self.received = 0
        self.missed = 0
        self.rejected: Counter[str] = Counter()  # reason code -> frames dropped
        self._last: OrderedDict[str, dict[str, int]] = OrderedDict()  # sender -> topic -> last seq seen (LRU)
        self._latest_sender: str | None = None  # the sender at the end of that LRU order, and its streams
        self._latest_streams: dict[str, int] = {}
        self._logged_reject: set[str] = set()
        self._recv = self.socket.recv
        self._poller = zmq.Poller()
        self._poller.register(self.socket, zmq.POLLIN)

    def recv(self, timeout_ms: int = 0) -> Envelope | None:
        """The next valid message, or None if none arrives within ``timeout_ms``.

        Invalid frames are counted and skipped; this never raises for bad input.
        """
        deadline = time.monotonic() + timeout_ms / 1000
        poll = self._poller.poll
        while True:
            # Poll first, as a plain PUB/SUB loop does: an empty non-blocking
            # recv costs a raised exception on every wake-up.
            remaining_ms = int((deadline - time.monotonic()) * 1000) + 1 if timeout_ms > 0 else 0
            if not poll(remaining_ms):
                return None
            env = self.handle_frame(self._recv())
            if env is not None:
                return env
            if timeout_ms > 0 and time.monotonic() >= deadline:
                return None

    def drain(self, limit: int = 10_000) -> list[Envelope]:
        """Every valid message that is already waiting, up to ``limit`` frames."""
        out: list[Envelope] = []
        recv, handle = self._recv, self.handle_frame
        for _ in range(limit):
            try:
                frame = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            env = handle(frame)
            if env is not None:
                out.append(env)
        return out

    def handle_frame(self, frame: bytes) -> Envelope | None:
        """Decode and sequence-check one frame; None if it was rejected or is internal."""
        try:
            env = decode(frame)
        except DecodeError as exc:
            self._reject(exc)
            return None
        if not 0 < env.seq <= MAX_SEQ:
            self._reject(DecodeError(BAD_ENVELOPE, f"on {env.topic!r}: sequence number {env.seq} out of range", env.sender))
            return None
        sender = env.sender
        if sender == self._latest_sender:  # a run of frames from one sender: the common case
            sender_streams = self._latest_streams
        else:
            senders = self._last
            sender_streams = senders.get(sender)
            if sender_streams is None:
                sender_streams = senders[sender] = {}
                if len(senders) > MAX_SENDERS:
                    senders.popitem(last=False)
            else:
                senders.move_to_end(sender)
            self._latest_sender = sender
            self._latest_streams = sender_streams
        topic = env.topic
        last = sender_streams.get(topic)
        seq = env.seq
        if last is not None and seq != last + 1:
            if last + 1 < seq <= last + MAX_GAP:
                self._gap(env.sender, topic, last + 1, seq - 1)
            else:
                log.info("%s restarted its stream %r (seq %d after %d)", env.sender, topic, seq, last)
        sender_streams[topic] = seq
        if env.type == "heartbeat":
            self._check_tail(env.sender, env.msg)  # type: ignore[arg-type]
        if self._hidden_heartbeats and not topic.startswith(self.topics):
            return None
        self.received += 1
        return env

    def close(self) -> None:
        """Close the socket."""
        self.socket.close()

    def _check_tail(self, sender: str, hb: Heartbeat) -> None:
        known = self._pids.get(sender)
        if known != hb.pid:
            if known is None and len(self._pids) >= MAX_SENDERS:
                self._pids.clear()  # bounded like the sequence records
            self._pids[sender] = hb.pid
            if known is not None and self.on_restart is not None:
                log.info("%s restarted (pid %d, was %d)", sender, hb.pid, known)
                self.on_restart(sender)
        seqs = hb.info.get(HEARTBEAT_SEQS_KEY)
        if not isinstance(seqs, Mapping):
            return
        streams = self._last.get(sender)
        if not streams:
            return
        for topic, announced in seqs.items():
            last = streams.get(topic)
            if last is None or type(announced) is not int:
                continue
            # Frames of one sender stay in order through the proxy: whatever the
            # heartbeat announces and has not arrived before it was dropped.
            if last < announced <= last + MAX_GAP:
                self._gap(sender, topic, last + 1, announced)
                streams[topic] = announced

    def _gap(self, sender: str, topic: str, first: int, last: int) -> None:
        self.missed += last - first + 1
        log.warning("missed %d message(s) from %s on %r: seq %d..%d", last - first + 1, sender, topic, first, last)
        if self.on_gap is not None:
            self.on_gap(sender, topic, first, last)

    def _reject(self, exc: DecodeError) -> None:
        self.rejected[exc.reason_code] += 1
        key = exc.sender if exc.sender is not None else "?"
        if key not in self._logged_reject:
            if len(self._logged_reject) >= MAX_SENDERS:
                self._logged_reject.clear()  # bounded like the sequence records
            self._logged_reject.add(key)
            log.warning("dropping bad frame(s) from %s: %s", key, exc)
