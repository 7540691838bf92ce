"""One pacer for every REST call the firm makes to KIS, orders first, cancels next, queries last.

KIS counts REST calls per app key across every caller: 20 a second on the
real server, 2 on demo, and answers the call over the limit with EGW00201
(KIS.md 5.1). How it counts is UNCONFIRMED; the local server counts a sliding
one-second window, the strictest reading, and so does this pacer: at most
``calls`` calls in any window of ``window_s`` seconds.

The margin below KIS's rate covers what this process cannot see: requests
reach KIS some milliseconds apart from how they left (a jittered burst lands
closer together than it was sent), and KIS's window may start elsewhere than
ours. Real: 18 calls per second (two of KIS's twenty kept as slack). Demo:
2 calls per 1.25 s (1.6/s): with a budget of two a second, one call fewer
would halve the rate, so the slack is taken in time instead (a quarter second
more per window). Any rate can be given instead (``Budget.of``).

Priority without threads: a query may only use the window's slots while it
leaves ``query_reserve`` of them free, a cancel ``cancel_reserve``, an order
none. A burst of queries (a balance of many pages, a reconciliation) can
therefore never take the slot an order needs: the order is sent at once
while the queries wait their turn.

EGW00201 means KIS's count differs from ours (another client on the key, a
lower limit than published): ``penalise`` stops everything for a pause that
doubles with each refusal (1 s up to 30 s) and is forgiven after a clean
minute. Pure: the caller passes the time and does the sleeping.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum

KIS_RATE_PER_S = {"real": 20, "demo": 2}  # KIS.md 5.1
DEFAULT_RATE_PER_S = {"real": 18.0, "demo": 1.6}
PENALTY_FIRST_S = 1.0
PENALTY_MAX_S = 30.0
PENALTY_FORGIVEN_AFTER_S = 60.0
MIN_WAIT_S = 0.001


class Kind(StrEnum):
    """What a call is, in priority order."""

    ORDER = "order"
    CANCEL = "cancel"
    QUERY = "query"


@dataclass(frozen=True, slots=True)
class Budget:
    """At most ``calls`` in any ``window_s``; the slots a cancel and a query must leave free for what outranks them."""

    calls: int
    window_s: float
    cancel_reserve: int
    query_reserve: int

    @classmethod
    def of(cls, rate_per_s: float) -> Budget:
        """A budget that averages ``rate_per_s``, allowing a burst of about one second's calls (two at least)."""
        if rate_per_s <= 0:
            raise ValueError(f"a rate must be positive, not {rate_per_s}")
        calls = max(2, round(rate_per_s))
        return cls(calls, calls / rate_per_s, cancel_reserve=calls // 10, query_reserve=max(1, calls // 4))

    @classmethod
    def for_env(cls, env: str, rate_per_s: float = 0.0) -> Budget:
        """KIS's published rate for ``env`` less the margin of the module docstring, or ``rate_per_s`` if given."""
        if env not in DEFAULT_RATE_PER_S:
            raise ValueError(f"env must be 'demo' or 'real', not {env!r}")
        return cls.of(rate_per_s or DEFAULT_RATE_PER_S[env])

    def allowance(self, kind: Kind) -> int:
        """How many of the window's slots a call of this kind may find taken and still go."""
        reserve = {Kind.ORDER: 0, Kind.CANCEL: self.cancel_reserve, Kind.QUERY: self.query_reserve}[kind]
        return self.calls - reserve


class RateLimiter:
    """A sliding-window pacer with per-kind reserves and a growing pause after EGW00201 (one thread)."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self._sent: deque[float] = deque()  # when each call of the last window was admitted
        self._paused_until = 0.0
        self._penalties = 0  # consecutive, since the last clean stretch
        self._last_penalty = 0.0

    def acquire(self, kind: Kind, now: float) -> float:
        """Admit a call now (counted; returns 0.0), or say how many seconds to wait before asking again."""
        self._rebase(now)
        if now < self._paused_until:
            return self._paused_until - now
        if self._penalties and now - self._last_penalty >= PENALTY_FORGIVEN_AFTER_S:
            self._penalties = 0
        window = self.budget.window_s
        sent = self._sent
        while sent and sent[0] <= now - window:
            sent.popleft()
        allowed = self.budget.allowance(kind)
        if len(sent) < allowed:
            sent.append(now)
            return 0.0
        # wait until enough of the window's calls have aged out to leave ``allowed - 1`` in it
        return max(sent[len(sent) - allowed] + window - now, MIN_WAIT_S)

    def penalise(self, now: float) -> float:
        """KIS said EGW00201: pause every call; returns the pause (1 s, 2 s, 4 s ... 30 s)."""
        self._rebase(now)
        if self._penalties and now - self._last_penalty >= PENALTY_FORGIVEN_AFTER_S:
            self._penalties = 0
        pause = min(PENALTY_MAX_S, PENALTY_FIRST_S * 2 ** min(self._penalties, 16))
        self._penalties += 1
        self._last_penalty = now
        self._paused_until = max(self._paused_until, now + pause)
        return pause

    def paused_for(self, now: float) -> float:
        """Seconds left of the current pause (0 when none)."""
        return max(0.0, self._paused_until - now)

    def _rebase(self, now: float) -> None:
        """A clock that stepped back (the wall clock set) must not hold calls for the size of the step."""
        if self._sent and self._sent[-1] > now:
            self._sent = deque(min(t, now) for t in self._sent)
        if self._paused_until - now > PENALTY_MAX_S:
            self._paused_until = now + PENALTY_MAX_S
