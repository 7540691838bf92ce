"""Fault injection at the paper exchange: the misbehaviour a real broker shows, on command.

Kinds (the ``fault`` command's ``args``):

* ``{"kind": "disconnect", "seconds": N}``: for N wall seconds the exchange
  answers nothing and publishes nothing (requests are dropped; clients time out);
* ``{"kind": "delay", "ms": N}``: every reply waits N ms;
* ``{"kind": "refuse_queries", "seconds": N}``: for N wall seconds the account's
  records (account, positions, open orders, the day's orders and fills, an
  order's status) are refused with ``BROKER_DISCONNECTED``, as the KIS gateway
  refuses them while KIS does not answer it (a token KIS issues once a minute);
  orders and the clock are served as usual;
* ``{"kind": "reject_fraction", "fraction": F}``: refuse that share of new orders
  (``BROKER_REJECTED_RANDOM``), drawn from a seeded generator;
* ``{"kind": "notice_before_reply", "on": bool}``: publish an order's notices
  before its RPC reply (the race the real broker has);
* ``{"kind": "duplicate_notice", "on": bool}``: publish every notice twice;
* ``{"kind": "clear"}``: back to normal (a phantom change stays: it is not a fault in force);
* ``{"kind": "phantom", "code": "000660", "qty": 3, "cash_won": -12345}``: change
  the account without any fill, order or notice, as a trade made outside the
  firm would: the holding of ``code`` grows by ``qty`` shares (negative: shrinks)
  and cash by ``cash_won``. Shares come in at zero cost (the holding's book cost
  stays, its average price falls); shares taken out leave at their average book
  cost. The change is saved like any other account change, so a restart keeps
  it. Refused (``BAD_FAULT``) when the code is not traded here, ``qty`` or
  ``cash_won`` is not a whole number, or the holding would fall below zero (or
  below what open sells offer) or the cash below zero (or below what open buys
  hold). Reconciliation tests use it to prove a break is caught.

The exchange starts with the faults of ``[exchange.faults]`` in the stack
settings (``TRADER_EXCHANGE__FAULTS__*``). Pure: wall time (monotonic ns) is passed in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

BAD_FAULT = "BAD_FAULT"
MAX_DISCONNECT_S = 3600
MAX_DELAY_MS = 60_000


class FaultError(ValueError):
    """A fault command that cannot be carried out, with the reason."""


@dataclass(slots=True)
class Faults:
    """The faults in force."""

    seed: int = 0
    disconnected_until_ns: int = 0
    refusing_until_ns: int = 0
    delay_ms: int = 0
    reject_fraction: float = 0.0
    notice_before_reply: bool = False
    duplicate_notice: bool = False
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def apply(self, args: dict[str, Any], now_ns: int) -> dict[str, Any]:
        """Carry out one fault command; FaultError names what is wrong with it."""
        kind = args.get("kind")
        if kind == "disconnect":
            seconds = _number(args, "seconds", 0, MAX_DISCONNECT_S)
            self.disconnected_until_ns = now_ns + int(seconds * 1e9)
        elif kind == "refuse_queries":
            seconds = _number(args, "seconds", 0, MAX_DISCONNECT_S)
            self.refusing_until_ns = now_ns + int(seconds * 1e9)
        elif kind == "delay":
            self.delay_ms = int(_number(args, "ms", 0, MAX_DELAY_MS))
        elif kind == "reject_fraction":
            self.reject_fraction = float(_number(args, "fraction", 0, 1))
        elif kind in ("notice_before_reply", "duplicate_notice"):
            on = args.get("on", True)
            if not isinstance(on, bool):
                raise FaultError(f"{kind}: 'on' must be true or false, not {on!r}")
            setattr(self, kind, on)
        elif kind == "clear":
            self.disconnected_until_ns = 0
            self.refusing_until_ns = 0
            self.delay_ms = 0
            self.reject_fraction = 0.0
            self.notice_before_reply = False
            self.duplicate_notice = False
        else:
            raise FaultError(
                f"unknown fault kind {kind!r}: disconnect, refuse_queries, delay, reject_fraction, "
                "notice_before_reply, duplicate_notice, clear or phantom"
            )
        return self.describe(now_ns)

    def disconnected(self, now_ns: int) -> bool:
        """Whether the exchange plays dead right now."""
        return now_ns < self.disconnected_until_ns

    def refusing_queries(self, now_ns: int) -> bool:
        """Whether the account's records are refused right now."""
        return now_ns < self.refusing_until_ns

    def reject_next_order(self) -> bool:
        """Whether to refuse the next new order at random."""
        return self.reject_fraction > 0 and self._rng.random() < self.reject_fraction

    def describe(self, now_ns: int) -> dict[str, Any]:
        """The faults in force, as plain data."""
        return {
            "disconnected_s": max(0.0, (self.disconnected_until_ns - now_ns) / 1e9),
            "refusing_queries_s": max(0.0, (self.refusing_until_ns - now_ns) / 1e9),
            "delay_ms": self.delay_ms,
            "reject_fraction": self.reject_fraction,
            "notice_before_reply": self.notice_before_reply,
            "duplicate_notice": self.duplicate_notice,
        }


@dataclass(frozen=True, slots=True)
class Phantom:
    """An account change no fill explains: ``qty`` shares of ``code`` and ``cash_won`` won (either may be negative)."""

    code: str
    qty: int
    cash_won: int


def phantom_from_args(args: dict[str, Any]) -> Phantom:
    """The phantom change a ``{"kind": "phantom", ...}`` command asks for; FaultError names what is wrong."""
    code = args.get("code")
    if not isinstance(code, str) or not code:
        raise FaultError(f"phantom: 'code' must be a stock code, not {code!r}")
    amounts = {}
    for key in ("qty", "cash_won"):
        value = args.get(key, 0)
        if type(value) is not int:
            raise FaultError(f"phantom: {key!r} must be a whole number, not {value!r}")
        amounts[key] = value
    unknown = sorted(set(args) - {"kind", "code", "qty", "cash_won"})
    if unknown:
        raise FaultError(f"phantom: unknown argument(s) {', '.join(unknown)}; it takes code, qty and cash_won")
    return Phantom(code=code, qty=amounts["qty"], cash_won=amounts["cash_won"])


def _number(args: dict[str, Any], key: str, low: float, high: float) -> float:
    value = args.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise FaultError(f"{args.get('kind')}: {key!r} must be a number from {low} to {high}, not {value!r}")
    return float(value)
