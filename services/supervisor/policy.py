"""When to restart a process that died, and when to stop trying (pure; time passed in).

As in Circus: the first unexpected death is restarted at once, each further
one (before the process has run ``stable_s`` seconds) waits a backoff that
doubles up to a ceiling; ``flap_restarts`` restarts within ``flap_window_s``
seconds mean the process is flapping, and the supervisor stops restarting it
(and raises an alert) until someone spawns it again by hand.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class RestartPolicy:
    """Backoff and flapping detection for one process; ``now`` is a monotonic reading in seconds."""

    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    flap_restarts: int = 5
    flap_window_s: float = 60.0
    restarts: deque[float] = field(default_factory=deque)
    deaths_in_a_row: int = 0

    def on_death(self, now: float) -> float | None:
        """A death was seen at ``now``: the monotonic time to restart at, or None when flapping."""
        while self.restarts and now - self.restarts[0] > self.flap_window_s:
            self.restarts.popleft()
        if len(self.restarts) >= self.flap_restarts:
            return None
        n = self.deaths_in_a_row
        self.deaths_in_a_row += 1
        delay = 0.0 if n == 0 else min(self.backoff_max_s, self.backoff_s * 2 ** (n - 1))
        return now + delay

    def on_restart(self, now: float) -> None:
        """A restart happened at ``now`` (counts towards flapping)."""
        self.restarts.append(now)

    def on_stable(self) -> None:
        """The process has run long enough to count as healthy: the backoff starts over."""
        self.deaths_in_a_row = 0

    def reset(self) -> None:
        """Forget the history (a spawn by hand gives a flapping process a fresh start)."""
        self.restarts.clear()
        self.deaths_in_a_row = 0
