"""The bus wire format: one ZeroMQ frame per message, topic first, then msgpack.

A frame is ``topic (UTF-8) + b"\\x00" + msgpack([sender, seq, ts_ns, type, version,
payload])``. The topic leads the frame so ZeroMQ's prefix subscription filters on
it; the NUL separator cannot occur inside a topic, so a subscription to
``b"md.tick."`` still matches every ``md.tick.<code>`` frame. ``payload`` is a
msgpack map of the model's fields.

``seq`` counts the messages one sender has published on one topic, starting at
1, without gaps: every frame of a topic either matches a subscriber's prefix
filter or not, so each (sender, topic) stream arrives whole unless something
dropped it, and a subscriber can tell which numbers are missing.

Decoding validates the payload into the model registered under ``type`` in
``core.messages.REGISTRY``. Anything wrong with a frame raises one exception
type, :class:`DecodeError`, carrying a reason code.

Two paths decode a frame, and they agree. The fast path (msgspec, in C) reads
the envelope and, for message types whose fields are all scalars, validates the
payload against a msgspec mirror of the model (:mod:`bus.fastpath`); it only
ever accepts what pydantic would accept, with the same values. Whatever it does
not accept (an unusual but valid encoding, a type with nested fields, or a bad
frame) goes through the reference path: msgpack, the envelope checks and the
pydantic model, which gives the canonical result or error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

import msgpack
import msgspec
from pydantic import BaseModel, ValidationError

from bus.fastpath import fast_decoder
from core.messages import REGISTRY, Message

TOPIC_SEPARATOR: Final = b"\x00"

# Reason codes of DecodeError.
NO_TOPIC_SEPARATOR: Final = "NO_TOPIC_SEPARATOR"
BAD_TOPIC: Final = "BAD_TOPIC"
BAD_MSGPACK: Final = "BAD_MSGPACK"
BAD_ENVELOPE: Final = "BAD_ENVELOPE"
UNKNOWN_TYPE: Final = "UNKNOWN_TYPE"
SCHEMA_VERSION_MISMATCH: Final = "SCHEMA_VERSION_MISMATCH"
INVALID_PAYLOAD: Final = "INVALID_PAYLOAD"


class DecodeError(Exception):
    """A frame that cannot become a message, with a reason code and the sender if known."""

    def __init__(self, reason_code: str, text: str, sender: str | None = None) -> None:
        self.reason_code = reason_code
        self.text = text
        self.sender = sender
        who = f" from {sender!r}" if sender is not None else ""
        super().__init__(f"{reason_code}{who}: {text}")


class EncodeError(ValueError):
    """A message or topic that cannot be put on the wire (a programming error)."""


@dataclass(slots=True)
class Envelope:
    """A decoded frame: where it came from, its place in the stream, and the message."""

    topic: str
    sender: str
    seq: int
    ts_ns: int
    type: str
    version: int
    msg: Message


def _wire_value(obj: Any) -> Any:
    """Turn the values msgpack does not know (nested models, sets) into plain data."""
    if isinstance(obj, BaseModel):
        return obj.__dict__
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"cannot put {type(obj).__name__} on the bus")


_encode = msgspec.msgpack.Encoder(enc_hook=_wire_value).encode
_unpackb = msgpack.unpackb
_decode_head = msgspec.msgpack.Decoder(tuple[str, int, int, str, int, msgspec.Raw]).decode


# type name -> (model class, its validator, its schema version); filled on first use
# because later modules may still register messages after this one is imported.
_TYPES: dict[str, tuple[type[Message], Callable[[Any], Message], int]] = {}
# type name -> (schema version, msgspec payload decoder -> model) for the fast path; None: no fast path
_FAST: dict[str, tuple[int, Callable[[Any], Message]] | None] = {}


def _lookup(type_name: Any) -> tuple[type[Message], Callable[[Any], Message], int] | None:
    cls = REGISTRY.get(type_name) if type(type_name) is str else None
    if cls is None:
        return None
    # The model's own validator: what model_validate calls, minus its overhead.
    entry = _TYPES[type_name] = (cls, cls.__pydantic_validator__.validate_python, cls.VERSION)
    return entry


def topic_prefix(topic: str) -> bytes:
    """The leading bytes of every frame on ``topic`` (topic + separator)."""
    if not topic:
        raise EncodeError("empty topic")
    if "\x00" in topic:
        raise EncodeError(f"topic {topic!r} contains NUL")
    return topic.encode() + TOPIC_SEPARATOR


def encode_with_prefix(prefix: bytes, sender: str, seq: int, ts_ns: int, msg: Message) -> bytes:
    """Encode a message after a topic prefix made by :func:`topic_prefix` (the hot path)."""
    cls = msg.__class__
    try:
        return prefix + _encode([sender, seq, ts_ns, cls.TYPE, cls.VERSION, msg.__dict__])
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
        raise EncodeError(f"cannot encode {cls.__name__}: {exc}") from exc


def encode(topic: str, sender: str, seq: int, msg: Message, ts_ns: int = 0) -> bytes:
    """One frame carrying ``msg`` on ``topic`` as message ``seq`` of ``sender``."""
    if msg.__class__.TYPE not in REGISTRY:
        raise EncodeError(f"{msg.__class__.__name__} is not a registered message type")
    return encode_with_prefix(topic_prefix(topic), sender, seq, ts_ns, msg)


def decode(frame: bytes) -> Envelope:
    """Validate a frame into an Envelope, or raise DecodeError with the reason."""
    sep = frame.find(TOPIC_SEPARATOR)
    if sep >= 0:
        try:
            sender, seq, ts_ns, type_name, version, payload = _decode_head(frame[sep + 1 :])
            fast = _FAST[type_name]
            if fast is not None and fast[0] == version:
                return Envelope(frame[:sep].decode(), sender, seq, ts_ns, type_name, version, fast[1](payload))
        except KeyError:  # a type not seen yet: this frame takes the reference path
            cls = REGISTRY.get(type_name)
            if cls is not None:  # a made-up type name is not remembered
                build = fast_decoder(cls)
                _FAST[type_name] = None if build is None else (cls.VERSION, build)
        except Exception:  # msgspec's decode and validation errors, too deep nesting, bad UTF-8 in the topic
            pass  # the reference path names the problem (or accepts what only pydantic's lax mode takes)
    return _decode_reference(frame, sep)


def _decode_reference(frame: bytes, sep: int) -> Envelope:
    """The reference decoder: every check in order, the pydantic model, the canonical error."""
    if sep < 0:
        raise DecodeError(NO_TOPIC_SEPARATOR, f"no topic separator in {len(frame)}-byte frame")
    try:
        topic = frame[:sep].decode()
    except UnicodeDecodeError as exc:
        raise DecodeError(BAD_TOPIC, f"topic is not UTF-8: {exc}") from None
    try:
        head = _unpackb(frame[sep + 1 :])
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DecodeError(BAD_MSGPACK, f"on {topic!r}: {type(exc).__name__}: {exc}") from None
    try:
        sender, seq, ts_ns, type_name, version, payload = head
    except (TypeError, ValueError):
        raise DecodeError(BAD_ENVELOPE, f"on {topic!r}: envelope is not a 6-item array") from None
    entry = _TYPES.get(type_name) if type(type_name) is str else None
    # One test for the common case; the slow path below names what is wrong.
    if (
        entry is None
        or type(sender) is not str
        or type(seq) is not int
        or type(ts_ns) is not int
        or type(version) is not int
        or version != entry[2]
        or type(payload) is not dict
    ):
        entry = _check_envelope(topic, sender, seq, ts_ns, type_name, version, payload)
    try:
        msg = entry[1](payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '-'}: {err['msg']}" for err in exc.errors()
        )
        raise DecodeError(INVALID_PAYLOAD, f"on {topic!r}: {type_name}: {problems}", sender) from None
    return Envelope(topic, sender, seq, ts_ns, type_name, version, msg)


def _check_envelope(
    topic: str, sender: Any, seq: Any, ts_ns: Any, type_name: Any, version: Any, payload: Any
) -> tuple[type[Message], Callable[[Any], Message], int]:
    """The envelope's first problem as a DecodeError, or its type's entry if it has none."""
    if type(sender) is not str:
        raise DecodeError(BAD_ENVELOPE, f"on {topic!r}: sender is not a string")
    if type(seq) is not int or type(ts_ns) is not int or type(version) is not int:
        raise DecodeError(BAD_ENVELOPE, f"on {topic!r}: seq, ts_ns and version must be integers", sender)
    if type(payload) is not dict:
        raise DecodeError(BAD_ENVELOPE, f"on {topic!r}: payload is not a map", sender)
    entry = _TYPES.get(type_name) if type(type_name) is str else None
    if entry is None:
        entry = _lookup(type_name)
        if entry is None:
            raise DecodeError(UNKNOWN_TYPE, f"on {topic!r}: unknown message type {type_name!r}", sender)
    if version != entry[2]:
        raise DecodeError(
            SCHEMA_VERSION_MISMATCH,
            f"on {topic!r}: {type_name} version {version}, this process speaks {entry[2]}",
            sender,
        )
    return entry
