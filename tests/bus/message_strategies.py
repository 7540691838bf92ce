"""Hypothesis strategies that build valid instances of any message in the catalogue.

Built from each model's pydantic fields (type and constraints), so a message
added to ``core.messages`` is covered by the round-trip test without edits here.
Integers stay within 64 bits: the wire's limit.
"""

from __future__ import annotations

import enum
import types
import typing
from typing import Any

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from hypothesis import strategies as st
from pydantic import BaseModel

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(INT64_MIN, INT64_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def for_annotation(annotation: Any, metadata: list[Any] = ()) -> st.SearchStrategy[Any]:  # type: ignore[assignment]
    """A strategy for values valid under ``annotation`` and pydantic field ``metadata``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        return for_annotation(base, [*metadata, *extra])
    if annotation is Any:
        return json_values
    if origin in (typing.Union, types.UnionType):
        return st.one_of([for_annotation(a) for a in typing.get_args(annotation)])
    if origin is typing.Literal:
        return st.sampled_from(typing.get_args(annotation))
    if origin in (tuple, list, set, frozenset):
        args = typing.get_args(annotation)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return st.tuples(*[for_annotation(a) for a in args])
        items = st.lists(for_annotation(args[0] if args else Any), max_size=4)
        return items.map(origin)
    if origin is dict:
        key_t, value_t = typing.get_args(annotation) or (str, Any)
        return st.dictionaries(for_annotation(key_t), for_annotation(value_t), max_size=4)
    if annotation is type(None):
        return st.none()
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return model_instances(annotation)
        if issubclass(annotation, enum.Enum):
            return st.sampled_from(list(annotation))
        if annotation is bool:
            return st.booleans()
        if annotation is int:
            lo, hi = INT64_MIN, INT64_MAX
            for m in metadata:
                if isinstance(m, Ge):
                    lo = max(lo, m.ge)
                elif isinstance(m, Gt):
                    lo = max(lo, m.gt + 1)
                elif isinstance(m, Le):
                    hi = min(hi, m.le)
                elif isinstance(m, Lt):
                    hi = min(hi, m.lt - 1)
            return st.integers(lo, hi)
        if annotation is float:
            lo_f = next((m.ge for m in metadata if isinstance(m, Ge)), None)
            hi_f = next((m.le for m in metadata if isinstance(m, Le)), None)
            return st.floats(lo_f, hi_f, allow_nan=False, allow_infinity=False)
        if annotation is str:
            pattern = next((getattr(m, "pattern", None) for m in metadata if getattr(m, "pattern", None)), None)
            if pattern:
                return st.from_regex(pattern, fullmatch=True)
            min_len = next((m.min_length for m in metadata if isinstance(m, MinLen)), 0)
            max_len = next((m.max_length for m in metadata if isinstance(m, MaxLen)), 40)
            return st.text(min_size=min_len, max_size=min(max_len, 40))
    return st.from_type(annotation)


def _book_sides(draw: Any) -> dict[str, list[int]]:
    """A consistent book: each level's price with its quantity, positive prices, the best bid below the best ask."""
    bids = draw(st.lists(st.integers(1, 10**9), max_size=10, unique=True))
    asks = draw(st.lists(st.integers(1, 10**9), max_size=10, unique=True))
    bid_px, ask_px = sorted(bids, reverse=True), sorted(asks)
    if bid_px and ask_px and bid_px[0] >= ask_px[0]:
        ask_px = [p + bid_px[0] for p in ask_px]
    return {
        "bid_px": bid_px, "bid_qty": draw(st.lists(st.integers(0, 2**62), min_size=len(bid_px), max_size=len(bid_px))),
        "ask_px": ask_px, "ask_qty": draw(st.lists(st.integers(0, 2**62), min_size=len(ask_px), max_size=len(ask_px))),
    }


# fields that must agree with each other: drawn together (a model validator checks them across fields)
_JOINT_FIELDS: dict[str, tuple[tuple[str, ...], Any]] = {
    "quote": (("bid_px", "bid_qty", "ask_px", "ask_qty"), st.composite(_book_sides)),
}


def model_instances(cls: type[BaseModel]) -> st.SearchStrategy[BaseModel]:
    """Valid instances of a pydantic model, every field given a generated value."""
    joint_names, joint = _JOINT_FIELDS.get(getattr(cls, "TYPE", ""), ((), None))
    fields = {
        name: for_annotation(field.annotation, list(field.metadata))
        for name, field in cls.model_fields.items() if name not in joint_names
    }
    if joint is None:
        return st.fixed_dictionaries(fields).map(lambda kwargs: cls(**kwargs))
    return st.tuples(st.fixed_dictionaries(fields), joint()).map(lambda pair: cls(**pair[0], **pair[1]))
