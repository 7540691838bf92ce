"""Reconnect delays for broker clients: exponential from 1 s to 30 s with jitter, no attempt limit."""

from __future__ import annotations

import random


class Backoff:
    """How long to wait before the next reconnect attempt (full jitter over an exponential ceiling).

    The ceiling doubles from ``initial_s`` up to ``max_s`` with each failed
    attempt; each delay is drawn uniformly between half the ceiling and the
    ceiling, so many clients that lost the broker together do not come back in
    lockstep. There is no limit on attempts: the caller retries until it
    succeeds and then calls ``reset()``.
    """

    def __init__(
        self, initial_s: float = 1.0, max_s: float = 30.0, *, factor: float = 2.0, rng: random.Random | None = None
    ) -> None:
        if initial_s <= 0 or max_s < initial_s or factor < 1:
            raise ValueError("backoff needs 0 < initial_s <= max_s and factor >= 1")
        self.initial_s = initial_s
        self.max_s = max_s
        self.factor = factor
        self.attempts = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """The largest delay the next attempt may get."""
        return min(self.max_s, self.initial_s * self.factor**min(self.attempts, 64))

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; counts the attempt."""
        top = self.ceiling()
        self.attempts += 1
        return self._rng.uniform(top / 2, top)

    def reset(self) -> None:
        """Start again from the initial delay (after a successful reconnect)."""
        self.attempts = 0
