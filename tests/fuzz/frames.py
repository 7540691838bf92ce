"""Garbage for the bus and the RPC servers: seeded, cheap, and classified by the codec itself.

:class:`FrameFactory` makes single frames (for PUB/XSUB inputs) and multipart
requests (for ROUTER inputs) of every bad kind a peer could send: random bytes,
empty frames, no topic separator, a topic that is not UTF-8, bad msgpack,
truncated valid frames, envelopes with wrong types, unknown types or versions,
and well-formed envelopes whose payload is absurd (negative quantities, prices
beyond any integer type, 1 MB strings, deep nesting). The same seed gives the
same frames, so a failure can be replayed.

:func:`expected_reason` is the oracle: what ``bus.codec.decode`` says about a
frame (its reason code, or None when it decodes), so a test can count what a
process must have rejected.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import msgpack

from bus.codec import BAD_ENVELOPE, DecodeError, decode, encode
from bus.pubsub import MAX_SEQ
from core.messages import (
    REGISTRY,
    Bar,
    CancelRequest,
    Command,
    Heartbeat,
    Message,
    OrderEvent,
    OrderRequest,
    OrderStatus,
    SessionEvent,
    SessionPhase,
    Side,
    Tick,
)

MEGABYTE = 1 << 20
U64_MAX = 2**64 - 1
I64_MIN = -(2**63)

# Values a payload field should never hold; msgpack cannot carry 10**30 as an
# integer, so the float stands in for it next to the largest wire integers.
ABSURD_VALUES: tuple[Any, ...] = (
    -1, -10**9, 0, U64_MAX, I64_MIN, 1e30, -1e30, float("nan"), float("inf"),
    "", "x" * 300, True, None, [], {}, [1, [2, [3]]], {"a": {"b": {"c": None}}}, b"\x00\xff",
)


def sample_messages(ts_ns: int = 1_772_500_000_000_000_000) -> list[Message]:
    """One valid message of the kinds the fuzzed processes read, as templates to spoil."""
    return [
        Tick(code="005930", ts_ns=ts_ns, price=70_000, qty=10, cum_volume=1_000, bid=69_900, ask=70_000),
        Bar(code="005930", ts_ns=ts_ns, open=70_000, high=70_100, low=69_900, close=70_000, volume=500),
        SessionEvent(phase=SessionPhase.OPEN, trading_date="20260303", ts_ns=ts_ns),
        OrderRequest(client_order_id="fuzz-20260303-1", agent_id="fuzz", code="005930", side=Side.BUY,
                     qty=1, price=70_000, ts_ns=ts_ns),
        CancelRequest(client_order_id="fuzz-20260303-1", agent_id="fuzz", qty=1, ts_ns=ts_ns),
        OrderEvent(client_order_id="fuzz-20260303-1", agent_id="fuzz", status=OrderStatus.ACCEPTED,
                   code="005930", side=Side.BUY, qty=1, price=70_000, ts_ns=ts_ns),
        Command(command_id="fuzz-1", name="status"),
        Heartbeat(name="fuzz", pid=1, state="running", ts_ns=ts_ns),
    ]


def expected_reason(frame: bytes, *, subscribed: bool = False) -> str | None:
    """The verdict on one frame: its reason code, or None if it decodes.

    ``subscribed``: as a Subscriber judges it, which also refuses sequence numbers
    outside 1..2**63-1 (an RPC request carries 0).
    """
    try:
        env = decode(frame)
    except DecodeError as exc:
        return exc.reason_code
    if subscribed and not 0 < env.seq <= MAX_SEQ:
        return BAD_ENVELOPE
    return None


class FrameFactory:
    """A seeded source of bad frames on the given topics (and now and then on none of them)."""

    def __init__(self, seed: int, topics: list[str], messages: list[Message] | None = None) -> None:
        self.rng = random.Random(seed)
        self.topics = topics
        self.messages = messages or sample_messages()
        self.valid_frames = [encode(t, "fuzz", 1, m) for t in topics for m in self.messages]
        self.payloads = [(type(m).TYPE, type(m).VERSION, m.model_dump(mode="json")) for m in self.messages]
        self._kinds: list[tuple[int, Callable[[], bytes]]] = [
            (8, self.random_bytes),
            (2, lambda: b""),
            (6, self.no_separator),
            (3, self.bad_topic),
            (12, self.bad_msgpack),
            (12, self.truncated),
            (12, self.wrong_envelope),
            (6, self.unknown_type),
            (4, self.wrong_version),
            (30, self.absurd_payload),
            (4, self.wrong_topic),
            (1, self.nested),
        ]
        self._weights = [w for w, _ in self._kinds]
        self._makers = [m for _, m in self._kinds]
        self.huge_every = 5_000  # one frame in this many carries a 1 MB string

    # --- single frames ---------------------------------------------------------

    def frame(self) -> bytes:
        """One bad (or at least suspicious) frame."""
        if self.rng.randrange(self.huge_every) == 0:
            return self.huge()
        return self.rng.choices(self._makers, self._weights)[0]()

    def frames(self, n: int) -> list[bytes]:
        """``n`` frames."""
        return [self.frame() for _ in range(n)]

    def _topic(self) -> bytes:
        return self.rng.choice(self.topics).encode() + b"\x00"

    def random_bytes(self) -> bytes:
        return self.rng.randbytes(self.rng.randrange(1, 64))

    def no_separator(self) -> bytes:
        return self.rng.choice(self.topics).encode() + self.rng.randbytes(self.rng.randrange(0, 32)).replace(b"\x00", b"")

    def bad_topic(self) -> bytes:
        return self.rng.choice(self.topics).encode() + b"\xff\xfe\x80" + b"\x00" + self.rng.choice(self.valid_frames)

    def bad_msgpack(self) -> bytes:
        junk = self.rng.choice([b"\xc1", b"\xdd\xff\xff\xff\xff", b"\x96\x01", b"\xd9\x20abc", b"\x92\xc1\xc1"])
        return self._topic() + junk + self.rng.randbytes(self.rng.randrange(0, 16))

    def truncated(self) -> bytes:
        valid = self.rng.choice(self.valid_frames)
        sep = valid.index(b"\x00")
        return valid[: self.rng.randrange(sep + 1, len(valid))]

    def wrong_envelope(self) -> bytes:
        type_name, version, payload = self.rng.choice(self.payloads)
        shapes: list[Any] = [
            [], [1, 2, 3], "not a list", 42, None, {"sender": "x"},
            ["fuzz", 1, 0, type_name, version],  # five items
            ["fuzz", 1, 0, type_name, version, payload, "extra"],
            [7, 1, 0, type_name, version, payload],  # sender not a string
            ["fuzz", "1", 0, type_name, version, payload],  # seq not an integer
            ["fuzz", 1, 1.5, type_name, version, payload],
            ["fuzz", 1, 0, type_name, "1", payload],
            ["fuzz", 1, 0, type_name, version, [payload]],  # payload not a map
            ["fuzz", 1, 0, type_name, version, None],
        ]
        return self._topic() + msgpack.packb(self.rng.choice(shapes))

    def unknown_type(self) -> bytes:
        _, version, payload = self.rng.choice(self.payloads)
        name = self.rng.choice(["", "tick ", "TICK", "no_such_type", 5, None, ["tick"], "x" * 200])
        return self._topic() + msgpack.packb(["fuzz", 1, 0, name, version, payload])

    def wrong_version(self) -> bytes:
        type_name, _, payload = self.rng.choice(self.payloads)
        version = self.rng.choice([0, 2, 99, -1, U64_MAX])
        return self._topic() + msgpack.packb(["fuzz", 1, 0, type_name, version, payload])

    def absurd_payload(self) -> bytes:
        """A well-formed envelope of a known type whose payload has one to three absurd fields."""
        type_name, version, payload = self.rng.choice(self.payloads)
        spoiled = dict(payload)
        for _ in range(self.rng.randrange(1, 4)):
            action = self.rng.randrange(10)
            if action == 0:
                spoiled[f"extra_{self.rng.randrange(100)}"] = 1  # unknown field
            elif action == 1 and spoiled:
                spoiled.pop(self.rng.choice(list(spoiled)))  # missing field
            else:
                spoiled[self.rng.choice(list(payload))] = self.rng.choice(ABSURD_VALUES)
        seq = self.rng.choice([1, 0, -1, U64_MAX, I64_MIN, self.rng.randrange(1, 1000)])
        sender = self.rng.choice(["fuzz", "", "exchange", "x" * 100])
        return self._topic() + msgpack.packb([sender, seq, self.rng.choice([0, -1, U64_MAX]), type_name, version, spoiled])

    def wrong_topic(self) -> bytes:
        """A valid message on a topic nobody subscribes to (or a random one)."""
        topic = self.rng.choice([b"fuzz.nowhere", b"md", b"sys", b"\xff", b"x" * 200])
        valid = self.rng.choice(self.valid_frames)
        return topic + valid[valid.index(b"\x00") :]

    def nested(self) -> bytes:
        """A command whose args nest hundreds of levels deep."""
        depth = self.rng.choice([50, 400, 600, 2_000])
        # Built by hand: the packer refuses to nest this deep, a hostile peer does not.
        head = msgpack.packb(["fuzz", 1, 0, "command", Command.VERSION])[1:]
        cmd = msgpack.packb({"command_id": "fuzz-deep", "name": "status", "who": ""})
        args = b"\xa4args\x81\xa4deep" + b"\x91" * depth + b"\x00"
        return self._topic() + b"\x96" + head + bytes([cmd[0] + 1]) + cmd[1:] + args

    def huge(self) -> bytes:
        """A known message type with a 1 MB string where a short name belongs."""
        type_name, version, payload = self.rng.choice(self.payloads)
        spoiled = dict(payload)
        spoiled[self.rng.choice(list(payload))] = "x" * MEGABYTE
        return self._topic() + msgpack.packb(["fuzz", 1, 0, type_name, version, spoiled])

    # --- multipart requests for ROUTER sockets -------------------------------

    def request(self, valid_bodies: list[bytes]) -> list[bytes]:
        """A bad request as a DEALER sends it: wrong frame counts, bad ids and keys, bad bodies."""
        shape = self.rng.randrange(10)
        request_id = self.rng.randbytes(self.rng.randrange(0, 24))
        if shape == 0:
            return [request_id]  # no key, no body
        if shape == 1:
            return [request_id, b""]  # no body
        if shape == 2:
            return [self.rng.randbytes(self.rng.randrange(0, 16)) for _ in range(self.rng.randrange(4, 9))]
        if shape == 3:
            return [request_id, b"", self.rng.choice(valid_bodies), b"trailing"]
        if shape == 4:
            return [request_id, b"\xff\xfe-key", self.frame()]  # the same key, not UTF-8, every time; body mostly bad
        body = self.frame()
        if shape == 5:
            body = self.rng.choice(valid_bodies)[: self.rng.randrange(0, 40)]
        return [request_id, b"", body]


def registered_types() -> list[str]:
    """Every message type the codec knows (for checks that the samples stay representative)."""
    return sorted(REGISTRY)
