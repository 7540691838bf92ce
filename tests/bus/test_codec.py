"""The wire format: every catalogue message survives a round trip; bad frames become DecodeError."""

from __future__ import annotations

import logging

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus import codec
from bus.codec import DecodeError, EncodeError, decode, encode
from bus.pubsub import Subscriber
from core.messages import REGISTRY, Message, Tick
from tests.bus.message_strategies import model_instances

TICK = Tick(code="005930", ts_ns=1_700_000_000_000_000_000, price=70_000, qty=10, bid=69_900, ask=70_000)
topics = st.text(min_size=1, max_size=30).filter(lambda t: "\x00" not in t)


@pytest.mark.parametrize("type_name", sorted(REGISTRY))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), topic=topics, sender=st.text(max_size=20), seq=st.integers(0, 2**63 - 1))
def test_every_message_type_round_trips(type_name: str, data: st.DataObject, topic: str, sender: str, seq: int) -> None:
    msg = data.draw(model_instances(REGISTRY[type_name]))
    env = decode(encode(topic, sender, seq, msg, ts_ns=123))
    assert (env.topic, env.sender, env.seq, env.ts_ns) == (topic, sender, seq, 123)
    assert (env.type, env.version) == (type_name, REGISTRY[type_name].VERSION)
    assert type(env.msg) is REGISTRY[type_name]
    assert env.msg == msg


def test_topic_leads_the_frame_so_prefix_subscriptions_match() -> None:
    frame = encode("md.tick.005930", "feed", 1, TICK)
    assert frame.startswith(b"md.tick.005930\x00")
    assert frame.startswith(b"md.tick.")


def test_one_frame_is_small() -> None:
    assert len(encode("md.tick.005930", "feed", 1, TICK)) < 120


def _frame(head: list) -> bytes:
    return b"md.tick.005930\x00" + msgpack.packb(head)


GOOD_PAYLOAD = dict(TICK.__dict__)
MALFORMED = {
    "no topic separator": (b"md.tick.005930 no separator", codec.NO_TOPIC_SEPARATOR),
    "topic not utf-8": (b"\xff\xfe\x00" + msgpack.packb(["s", 1, 0, "tick", 1, GOOD_PAYLOAD]), codec.BAD_TOPIC),
    "bad bytes": (b"md.tick.005930\x00\xc1\xc1\xc1", codec.BAD_MSGPACK),
    "truncated": (encode("md.tick.005930", "feed", 1, TICK)[:-7], codec.BAD_MSGPACK),
    "trailing bytes": (encode("md.tick.005930", "feed", 1, TICK) + b"\x01", codec.BAD_MSGPACK),
    "not an array": (b"md.tick.005930\x00" + msgpack.packb({"a": 1}), codec.BAD_ENVELOPE),
    "short envelope": (_frame(["feed", 1, 0, "tick", 1]), codec.BAD_ENVELOPE),
    "seq not an int": (_frame(["feed", "1", 0, "tick", 1, GOOD_PAYLOAD]), codec.BAD_ENVELOPE),
    "payload not a map": (_frame(["feed", 1, 0, "tick", 1, [1, 2]]), codec.BAD_ENVELOPE),
    "unknown type": (_frame(["feed", 1, 0, "no_such_type", 1, GOOD_PAYLOAD]), codec.UNKNOWN_TYPE),
    "schema version mismatch": (_frame(["feed", 1, 0, "tick", 99, GOOD_PAYLOAD]), codec.SCHEMA_VERSION_MISMATCH),
    "missing field": (_frame(["feed", 1, 0, "tick", 1, {"code": "005930", "ts_ns": 1}]), codec.INVALID_PAYLOAD),
    "extra field": (_frame(["feed", 1, 0, "tick", 1, {**GOOD_PAYLOAD, "venue": "x"}]), codec.INVALID_PAYLOAD),
    "wrong field type": (_frame(["feed", 1, 0, "tick", 1, {**GOOD_PAYLOAD, "price": "a lot"}]), codec.INVALID_PAYLOAD),
    "constraint broken": (_frame(["feed", 1, 0, "tick", 1, {**GOOD_PAYLOAD, "qty": -5}]), codec.INVALID_PAYLOAD),
    "bad code": (_frame(["feed", 1, 0, "tick", 1, {**GOOD_PAYLOAD, "code": "SAMSUNG"}]), codec.INVALID_PAYLOAD),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_frame_raises_decode_error_with_reason(kind: str) -> None:
    frame, reason = MALFORMED[kind]
    with pytest.raises(DecodeError) as err:
        decode(frame)
    assert err.value.reason_code == reason


def test_decode_error_names_the_sender_once_the_envelope_is_readable() -> None:
    with pytest.raises(DecodeError) as err:
        decode(MALFORMED["wrong field type"][0])
    assert err.value.sender == "feed"
    assert "price" in str(err.value)


def test_subscriber_survives_and_counts_every_kind_of_malformed_frame(caplog: pytest.LogCaptureFixture) -> None:
    import zmq

    ctx = zmq.Context()
    try:
        sub = Subscriber(ctx, "inproc://codec-test", [""], bind=True)
        with caplog.at_level(logging.WARNING, logger="bus.pubsub"):
            for frame, _ in MALFORMED.values():
                assert sub.handle_frame(frame) is None
            assert sub.handle_frame(encode("md.tick.005930", "feed", 1, TICK)) is not None
        expected: dict[str, int] = {}
        for _, reason in MALFORMED.values():
            expected[reason] = expected.get(reason, 0) + 1
        assert dict(sub.rejected) == expected
        assert sub.received == 1
        # logged once per sender: "feed" and the unknown sender of unreadable frames
        assert len([r for r in caplog.records if "dropping bad frame" in r.getMessage()]) == 2
        sub.close()
    finally:
        ctx.destroy(linger=0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_decode_error(frame: bytes) -> None:
    try:
        decode(frame)
    except DecodeError:
        pass


@settings(max_examples=100, deadline=None)
@given(cut=st.integers(0, 200))
def test_every_truncation_of_a_frame_is_rejected(cut: int) -> None:
    frame = encode("md.tick.005930", "feed", 1, TICK)
    cut = cut % len(frame)
    with pytest.raises(DecodeError):
        decode(frame[:cut])


def test_encode_refuses_topics_the_wire_cannot_carry() -> None:
    with pytest.raises(EncodeError):
        encode("md\x00tick", "feed", 1, TICK)
    with pytest.raises(EncodeError):
        encode("", "feed", 1, TICK)


def test_encode_refuses_unregistered_messages() -> None:
    class Stray(Message):
        TYPE = "stray_not_registered"

    with pytest.raises(EncodeError):
        encode("x", "feed", 1, Stray())


def test_encode_refuses_integers_beyond_64_bits() -> None:
    with pytest.raises(EncodeError):
        encode("md.tick.005930", "feed", 1, Tick.model_construct(code="005930", ts_ns=2**70, price=1, qty=1))
