"""msgspec mirrors of the message models: validation in C for the messages the bus carries most.

``fast_decoder(Model)`` builds, from the pydantic model's own fields and
constraints, a msgspec struct that validates a msgpack payload in one pass, and
returns a function turning that payload into a ``Model`` instance without
validating it a second time. It only handles what it can mirror exactly:
scalar fields (int, float, bool, str, string enums) with bounds, lengths and
anchored patterns, immutable defaults, no custom validators. Anything else
gives ``None`` and the codec keeps using pydantic for that type.

The mirror is stricter than pydantic, never looser: msgspec does not coerce
(``"5"`` or ``5.0`` for an int, bytes for a str), so such a payload fails here
and the codec hands it to pydantic, which decides as it always does. The
property tests in ``tests/bus/test_fastpath.py`` hold the two to that.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from typing import Annotated, Any

import annotated_types as at
import msgspec
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from core.messages import from_checked

_SCALARS = (int, float, bool, str)
# annotated-types constraints and the msgspec.Meta keyword (also the constraint's attribute) of each
_BOUNDS = {at.Ge: "ge", at.Gt: "gt", at.Le: "le", at.Lt: "lt", at.MinLen: "min_length", at.MaxLen: "max_length"}
# A pattern is checked after msgspec's pass, with the values that matched remembered (a stock code, an
# agent id): a set lookup instead of a regular expression for every message. Bounded: cleared when full.
PATTERN_CACHE_SIZE = 4096


def _pattern(pattern: str) -> str | None:
    """The pattern for Python's ``re.search`` that matches what pydantic's anchored pattern matches.

    ``$`` in Python also matches before a trailing newline, in pydantic's regex engine it does not;
    ``\\Z`` is the end of the text in both senses. Patterns with ``$`` elsewhere are not mirrored.
    """
    if not pattern.startswith("^") or not pattern.endswith("$") or pattern.endswith("\\$"):
        return None
    body = pattern[:-1]
    if "$" in body:
        return None
    return body + r"\Z"


def _field_type(annotation: Any, metadata: list[Any]) -> tuple[Any, str | None]:
    """The msgspec type of one field and its pattern (checked apart), or (None, None) when not mirrored."""
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        if not issubclass(annotation, str) or metadata:
            return None, None
        return annotation, None
    if annotation not in _SCALARS:
        return None, None
    meta: dict[str, Any] = {}
    pattern: str | None = None
    for m in metadata:
        bound = _BOUNDS.get(type(m))
        if bound is not None:
            meta[bound] = getattr(m, bound)
        elif type(m).__name__ == "_PydanticGeneralMetadata" and set(vars(m)) == {"pattern"} and annotation is str:
            pattern = _pattern(m.pattern)
            if pattern is None:
                return None, None
        else:
            return None, None
    if annotation is bool and (meta or pattern):
        return None, None
    if annotation is float and meta:  # pydantic's float bounds and NaN handling are not mirrored
        return None, None
    if annotation is not str and ({"min_length", "max_length"} & set(meta)):
        return None, None
    return (Annotated[annotation, msgspec.Meta(**meta)] if meta else annotation), pattern


def _mirror(cls: type[BaseModel]) -> tuple[type[msgspec.Struct], dict[str, str]] | None:
    """The msgspec struct of ``cls`` and the patterns of its fields (name -> pattern), or None."""
    if cls.model_config.get("extra") != "forbid" or cls.model_config.get("strict"):
        return None
    decorators = cls.__pydantic_decorators__
    if (decorators.validators or decorators.field_validators or decorators.root_validators
            or decorators.model_validators or decorators.field_serializers or decorators.model_serializers):
        return None
    if cls.__pydantic_post_init__ is not None or cls.__pydantic_root_model__:
        return None
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    patterns: dict[str, str] = {}
    for name, info in cls.model_fields.items():
        if info.alias not in (None, name) or info.validation_alias not in (None, name) or info.default_factory:
            return None
        ftype, pattern = _field_type(info.annotation, info.metadata)
        if ftype is None:
            return None
        if pattern is not None:
            if info.default is not PydanticUndefined and not re.search(pattern, str(info.default)):
                return None  # a default pydantic would not check: keep that to pydantic
            patterns[name] = pattern
        if info.default is PydanticUndefined:
            fields.append((name, ftype))
        else:
            if type(info.default) not in _SCALARS and not isinstance(info.default, enum.Enum):
                return None
            fields.append((name, ftype, info.default))
    return msgspec.defstruct(f"{cls.__name__}Wire", fields, kw_only=True, forbid_unknown_fields=True), patterns


def _pattern_check(pattern: str, field: str) -> tuple[set[str], Callable[[str], None]]:
    """The values known to match, and the check of a new value (it raises, or remembers the value)."""
    search = re.compile(pattern).search
    seen: set[str] = set()

    def check(value: str) -> None:
        if search(value) is None:
            raise msgspec.ValidationError(f"Expected `str` matching regex {pattern!r} - at `$.{field}`")
        if len(seen) >= PATTERN_CACHE_SIZE:
            seen.clear()
        seen.add(value)

    return seen, check


def fast_decoder(cls: type[BaseModel]) -> Callable[[Any], Any] | None:
    """A function from a msgpack payload (bytes or ``msgspec.Raw``) to a validated ``cls``; None if not mirrored.

    Raises ``msgspec.ValidationError`` or ``msgspec.DecodeError`` (both ``ValueError``) for a payload
    the mirror does not accept; the caller then asks pydantic.
    """
    mirrored = _mirror(cls)
    if mirrored is None:
        return None
    struct, patterns = mirrored
    decode = msgspec.msgpack.Decoder(struct).decode
    checks = tuple((name, *_pattern_check(pattern, name)) for name, pattern in patterns.items())
    asdict = msgspec.structs.asdict
    def build(payload: Any) -> Any:
        values = asdict(decode(payload))
        for name, seen, check in checks:
            value = values[name]
            if value not in seen:
                check(value)
        return from_checked(cls, values)

    return build
