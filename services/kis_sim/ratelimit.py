"""The REST rate limit per app key, counted across every connection: a sliding one-second window.

KIS answers the call over the limit with HTTP 500 and EGW00201 in the normal
envelope (KIS.md section 5.1). Whether its window slides or is fixed is
UNCONFIRMED; a sliding window is the stricter of the two (a burst straddling a
second boundary is caught), so that is what this server counts. Refused calls
do not use up the allowance. Pure: time (monotonic seconds) is passed in.
"""

from __future__ import annotations

from collections import deque

WINDOW_S = 1.0


class SlidingWindow:
    """At most ``per_second`` calls per app key in any window of one second."""

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._calls: dict[str, deque[float]] = {}
        self.refused = 0

    def admit(self, appkey: str, now_s: float) -> bool:
        """Count a call now and say whether it is within the limit (a refused call is not counted)."""
        calls = self._calls.get(appkey)
        if calls is None:
            calls = self._calls[appkey] = deque()
        edge = now_s - WINDOW_S
        while calls and calls[0] <= edge:
            calls.popleft()
        if len(calls) >= self.per_second:
            self.refused += 1
            return False
        calls.append(now_s)
        return True
