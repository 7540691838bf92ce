"""What an agent learns from a refused order: a backoff per reason code, and an alert on a storm.

A refused order is a signal, not a retry. ``RefusalMemory`` records every
refusal an agent hears (from the risk guard, the order manager or the venue,
and the context's own limit checks) and answers, for each new order, whether
it is held back. Each reason code has a policy (``BACKOFFS``): what it blocks
(``Scope``) and for how long, doubling with each repeat of the same block:

- a refusal by the order's size (``QTY_EXCEEDS_MAX_PER_ORDER``,
  ``NOTIONAL_EXCEEDS_MAX_PER_ORDER``) blocks orders of that code and side at
  least as large for the rest of the trading day: the same shape would be
  refused again, whatever the market does;
- a refusal by the order's price (``FAT_FINGER``, ``BAD_TICK``, ...) blocks
  that code, side and price a while;
- a refusal by the book (cash, shares, position, open orders, self-trade)
  blocks that code and side until the backoff passes;
- a transient refusal (``BROKER_DISCONNECTED``, ``RISK_UNAVAILABLE``, the rate
  limit) holds every new order of the agent a short, growing while;
- a refusal by the trading state or the session holds every new order longer;
  ``MARKET_CLOSED`` until the session changes.

More than ``STORM_COUNT`` refusals of one reason within ``STORM_WINDOW_NS`` of
market time is a storm: one alert names the agent and the reason, and the
next alert for that reason waits for a quiet minute. Pure: time is passed in.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

NS_PER_S = 1_000_000_000
STORM_COUNT = 5  # more refusals than this of one reason within the window is a storm
STORM_WINDOW_NS = 60 * NS_PER_S
UNTIL_TOMORROW = -1  # a backoff that lasts the rest of the trading day

# Reason codes of the agent's own making
BACKING_OFF = "BACKING_OFF"


class Scope(StrEnum):
    """What a refusal blocks."""

    SIZE = "size"  # orders of the code and side at least as large
    PRICE = "price"  # orders of the code and side at that price
    SIDE = "side"  # orders of the code and side
    AGENT = "agent"  # every new order of the agent


class Backoff(NamedTuple):
    """A reason code's policy: what it blocks, the first and the longest hold (s; UNTIL_TOMORROW: the day)."""

    scope: Scope
    first_s: float
    max_s: float
    until_session_change: bool = False


_SIZE = Backoff(Scope.SIZE, UNTIL_TOMORROW, UNTIL_TOMORROW)
_PRICE = Backoff(Scope.PRICE, 60, 600)
_BOOK = Backoff(Scope.SIDE, 30, 600)
_TRANSIENT = Backoff(Scope.AGENT, 1, 30)
_STATE = Backoff(Scope.AGENT, 60, 900)

BACKOFFS: dict[str, Backoff] = {
    "QTY_EXCEEDS_MAX_PER_ORDER": _SIZE,
    "NOTIONAL_EXCEEDS_MAX_PER_ORDER": _SIZE,
    "INVALID_QUANTITY": _SIZE,
    "FAT_FINGER": _PRICE,
    "BAD_TICK": _PRICE,
    "OUTSIDE_PRICE_LIMITS": _PRICE,
    "INVALID_PRICE": _PRICE,
    "INSUFFICIENT_CASH": _BOOK,
    "INSUFFICIENT_SHARES": _BOOK,
    "INSUFFICIENT_HOLDING": _BOOK,
    "POSITION_EXCEEDS_MAX_PER_AGENT": _BOOK,
    "POSITION_EXCEEDS_MAX_PER_CODE": _BOOK,
    "TOO_MANY_OPEN_ORDERS": _BOOK,
    "SELF_TRADE": _BOOK,
    "NOT_TRADABLE": _BOOK,
    "DAILY_LOSS_LIMIT": _BOOK,
    "TRADING_STATE_REDUCING": _BOOK,
    "BROKER_DISCONNECTED": _TRANSIENT,
    "RISK_UNAVAILABLE": _TRANSIENT,
    "RATE_LIMIT_EXCEEDED": _TRANSIENT,
    "JOURNAL_UNAVAILABLE": _TRANSIENT,
    "NEVER_REACHED_BROKER": _TRANSIENT,
    "BROKER_REJECTED": _BOOK,
    "TRADING_STATE_HALTED": _STATE,
    "MARKET_CLOSED": Backoff(Scope.AGENT, 60, 900, until_session_change=True),
    "WRONG_TRADING_DATE": Backoff(Scope.AGENT, 60, 900, until_session_change=True),
}
DEFAULT_BACKOFF = Backoff(Scope.SIDE, 60, 900)  # a reason without a policy of its own


@dataclass(frozen=True, slots=True)
class Refusal:
    """An order of the agent that was refused, and why: what ``Strategy.on_refused`` hears."""

    client_order_id: str
    code: str
    side: str
    qty: int
    price: int  # 0 for a market order
    reason_code: str
    text: str
    ts_ns: int
    parent_id: str = ""  # the sliced order it was a child of, if any
    sent: bool = True  # False: refused by the agent's own context before it went out


@dataclass(slots=True)
class _Block:
    reason_code: str
    backoff: Backoff
    until_ns: int  # UNTIL_TOMORROW: until the trading day ends
    repeats: int
    qty: int = 0  # SIZE: the smallest quantity refused


class RefusalMemory:
    """Backoffs per reason code and storm alerts for one agent (see the module docstring)."""

    def __init__(self, agent_id: str, *, storm_count: int = STORM_COUNT, storm_window_ns: int = STORM_WINDOW_NS) -> None:
        self.agent_id = agent_id
        self.storm_count = storm_count
        self.storm_window_ns = storm_window_ns
        self._blocks: dict[tuple[Any, ...], _Block] = {}
        self._streaks: Counter[tuple[Any, ...]] = Counter()  # refusals in a row per block, outliving the block itself
        self._recent: dict[str, deque[int]] = {}
        self._storming: set[str] = set()
        self.refused: Counter[str] = Counter()  # refusals of sent orders heard, by reason
        self.own: Counter[str] = Counter()  # orders the context refused at the agent's limits, by reason
        self.held_back: Counter[str] = Counter()  # orders not sent because of a backoff, by the reason held
        self.storms: Counter[str] = Counter()  # storm alerts raised, by reason

    @staticmethod
    def _key(backoff: Backoff, reason_code: str, code: str, side: str, price: int) -> tuple[Any, ...]:
        scope = backoff.scope
        if scope is Scope.AGENT:
            return (reason_code,)
        if scope is Scope.PRICE:
            return (reason_code, code, side, price)
        return (reason_code, code, side)

    def record(self, refusal: Refusal, now_ns: int) -> str | None:
        """Remember a refusal; the text of a storm alert to raise, or None."""
        reason = refusal.reason_code
        (self.refused if refusal.sent else self.own)[reason] += 1
        if refusal.sent:  # a refusal the context made itself needs no backoff: it is answered before it goes out
            backoff = BACKOFFS.get(reason, DEFAULT_BACKOFF)
            key = self._key(backoff, reason, refusal.code, refusal.side, refusal.price)
            block = self._blocks.get(key)
            repeats = self._streaks[key]
            self._streaks[key] += 1
            if backoff.first_s == UNTIL_TOMORROW:
                until = UNTIL_TOMORROW
            else:
                until = now_ns + int(min(backoff.max_s, backoff.first_s * 2**min(repeats, 30)) * NS_PER_S)
            qty = refusal.qty if block is None or block.qty == 0 else min(block.qty, refusal.qty)
            self._blocks[key] = _Block(reason, backoff, until, repeats, qty)
        return self._storm(reason, now_ns)

    def _storm(self, reason: str, now_ns: int) -> str | None:
        times = self._recent.setdefault(reason, deque())
        start = now_ns - self.storm_window_ns
        while times and times[0] <= start:
            times.popleft()
        if not times:
            self._storming.discard(reason)  # a quiet minute re-arms the alert
        times.append(now_ns)
        if len(times) > self.storm_count and reason not in self._storming:
            self._storming.add(reason)
            self.storms[reason] += 1
            return f"{self.agent_id}: {len(times)} orders refused {reason} within {self.storm_window_ns // NS_PER_S} s"
        return None

    def holds(self, code: str, side: str, qty: int, price: int, now_ns: int) -> _Block | None:
        """The backoff that holds back a new order of this shape, or None (and forgets expired ones)."""
        if not self._blocks:
            return None
        expired = []
        found = None
        for key, block in self._blocks.items():
            if block.until_ns != UNTIL_TOMORROW and block.until_ns <= now_ns:
                expired.append(key)
                continue
            scope = block.backoff.scope
            if scope is Scope.AGENT:
                hit = True
            elif key[1] != code or key[2] != side:
                hit = False
            elif scope is Scope.SIZE:
                hit = qty >= block.qty
            elif scope is Scope.PRICE:
                hit = key[3] == price
            else:
                hit = True
            if hit and found is None:
                found = block
        for key in expired:
            del self._blocks[key]
        if found is not None:
            self.held_back[found.reason_code] += 1
        return found

    def on_accepted(self, code: str, side: str) -> None:
        """An order of this code and side was accepted: the book- and transient backoffs on it are over."""
        for key in [k for k in self._streaks if BACKOFFS.get(k[0], DEFAULT_BACKOFF) in (_BOOK, _TRANSIENT)
                    and (len(k) == 1 or (k[1] == code and k[2] == side))]:
            self._blocks.pop(key, None)
            del self._streaks[key]

    def on_session_change(self) -> None:
        """A new trading phase: the backoffs that last until the session changes are over."""
        for key in [k for k in self._streaks if BACKOFFS.get(k[0], DEFAULT_BACKOFF).until_session_change]:
            self._blocks.pop(key, None)
            del self._streaks[key]

    def on_day_end(self) -> None:
        """The trading day is over: every backoff is (tomorrow's limits and prices are new)."""
        self._blocks.clear()
        self._streaks.clear()

    def take_counts(self) -> tuple[Counter[str], Counter[str]]:
        """The context's own refusals and the orders held back since the last call, by reason (then zeroed)."""
        own, held = self.own, self.held_back
        self.own, self.held_back = Counter(), Counter()
        return own, held

    def status(self) -> dict[str, Any]:
        """Counts by reason and the backoffs in force, as plain data."""
        return {
            "refused": dict(self.refused),
            "refused_by_agent": dict(self.own),
            "held_back": dict(self.held_back),
            "storms": dict(self.storms),
            "backoffs": [
                {"reason_code": b.reason_code, "scope": b.backoff.scope.value, "on": list(k[1:]), "until_ns": b.until_ns,
                 "repeats": b.repeats, **({"min_qty": b.qty} if b.backoff.scope is Scope.SIZE else {})}
                for k, b in self._blocks.items()
            ],
        }
