"""The msgspec fast path agrees with pydantic: it never accepts what pydantic refuses, nor gives other values."""

from __future__ import annotations

import msgpack
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus import codec
from bus.codec import DecodeError, decode, encode
from bus.fastpath import fast_decoder
from core.messages import REGISTRY, Heartbeat, OrderEvent, OrderStatus, Side, Tick
from tests.bus.message_strategies import model_instances

FAST_TYPES = sorted(t for t, cls in REGISTRY.items() if fast_decoder(cls) is not None)

# What a sender (or garbage) can put in a field: every msgpack kind, edge integers, tricky strings.
wire_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.sampled_from([0, -1, 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["005930", "005930\n", "\n005930", "00593O", "0059300", "", "a\n", "a\x7f", "buy", "BUY",
                      "accepted", "limit", "1", "1.0", "true", "x" * 129, "x" * 128])
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def test_the_hot_messages_have_a_fast_path_and_nested_ones_do_not() -> None:
    assert {"tick", "bar", "order_request", "cancel_request", "order_event", "fill", "session_event"} <= set(FAST_TYPES)
    assert fast_decoder(Heartbeat) is None  # a dict field: pydantic only


def same(fast: object, reference: object) -> bool:
    """Equal as models, and every value of the same type (an enum member, not its string; an int, not a float)."""
    f, r = fast.__dict__, reference.__dict__  # type: ignore[attr-defined]
    return (type(fast) is type(reference) and fast == reference and list(f) == list(r)
            and all(type(f[k]) is type(r[k]) for k in r))


@pytest.mark.parametrize("type_name", FAST_TYPES)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_valid_messages_decode_the_same_on_both_paths(type_name: str, data: st.DataObject) -> None:
    cls = REGISTRY[type_name]
    msg = data.draw(model_instances(cls))
    payload = msgpack.packb(msg.__dict__)
    fast = fast_decoder(cls)(payload)  # type: ignore[misc]
    assert same(fast, cls.model_validate(msgpack.unpackb(payload)))
    assert same(fast, msg)


@pytest.mark.parametrize("type_name", FAST_TYPES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_changed_payload_is_accepted_only_if_pydantic_accepts_it_with_the_same_values(
    type_name: str, data: st.DataObject
) -> None:
    cls = REGISTRY[type_name]
    payload = dict(data.draw(model_instances(cls)).__dict__)
    names = list(payload)
    for _ in range(data.draw(st.integers(1, 3))):
        change = data.draw(st.sampled_from(["set", "drop", "add"]))
        if change == "set":
            payload[data.draw(st.sampled_from(names))] = data.draw(wire_values)
        elif change == "drop" and payload:
            payload.pop(data.draw(st.sampled_from(sorted(payload))))
        else:
            payload[data.draw(st.text(max_size=8))] = data.draw(wire_values)
    packed = msgpack.packb(payload, use_bin_type=True)
    try:
        fast = fast_decoder(cls)(packed)  # type: ignore[misc]
    except ValueError:
        return  # refused by the fast path: the codec asks pydantic, whose answer is the answer
    reference = cls.model_validate(msgpack.unpackb(packed))  # must not raise: the fast path accepted it
    assert same(fast, reference)


@pytest.mark.parametrize("code", ["005930\n", "00593", "005930 ", "0059３0"])
def test_a_code_with_a_trailing_newline_or_other_near_miss_is_refused(code: str) -> None:
    payload = dict(Tick(code="005930", ts_ns=1, price=100, qty=1).__dict__, code=code)
    frame = b"md.tick.005930\x00" + msgpack.packb(["feed", 1, 0, "tick", 1, payload])
    with pytest.raises(DecodeError) as info:
        decode(frame)
    assert info.value.reason_code == codec.INVALID_PAYLOAD
    with pytest.raises(msgspec.ValidationError):
        fast_decoder(Tick)(msgpack.packb(payload))  # type: ignore[misc]


def test_a_lax_but_valid_payload_still_decodes_through_pydantic() -> None:
    """``qty`` as 5.0 and a status as bytes are refused by msgspec; pydantic's lax mode takes them."""
    event = OrderEvent(client_order_id="a-1", agent_id="a", code="005930", side=Side.BUY, status=OrderStatus.ACCEPTED,
                       qty=5)
    payload = dict(event.__dict__, qty=5.0)
    frame = b"oms.event.a\x00" + msgpack.packb(["oms", 7, 0, "order_event", 1, payload])
    assert decode(frame).msg == event


def test_decoded_fast_messages_behave_as_pydantic_models() -> None:
    frame = encode("md.tick.005930", "feed", 1, Tick(code="005930", ts_ns=1, price=100, qty=2))
    decode(frame)  # the first frame of a type learns the fast path
    msg = decode(frame).msg
    assert msg.model_dump() == {"code": "005930", "ts_ns": 1, "price": 100, "qty": 2, "cum_volume": 0, "bid": 0,
                                "ask": 0}
    assert hash(msg) == hash(Tick(code="005930", ts_ns=1, price=100, qty=2))
    assert msg.model_copy(update={"qty": 3}).qty == 3
    assert repr(msg).startswith("Tick(code='005930'")
    with pytest.raises(Exception, match="frozen"):
        msg.qty = 5  # type: ignore[misc]
