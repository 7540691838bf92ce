"""The feed link's state: liveness by heartbeat and reconnection with backoff and jitter.

Pure: the service tells it when it connected and when a frame arrived (with the
monotonic time), and asks ``poll(now)`` what to do next. A feed that has said
nothing, not even its once-a-second ``sys.heartbeat.exchange``, for
``silence_limit_s`` counts as dropped even when the socket looks open (a
ZeroMQ SUB socket never reports a dead peer): the zguide Paranoid Pirate's
heartbeat rule applied to a subscription. After a drop the link waits an
exponentially growing, jittered delay before the next attempt, so a restarting
exchange is not hammered and many clients do not reconnect in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum

from services.broker.base import ConnectionState


class LinkAction(StrEnum):
    """What the service must do after ``FeedLink.poll``."""

    NOTHING = "nothing"
    CONNECT = "connect"  # open a new subscription and subscribe again
    DROP = "drop"  # close the subscription: the feed is silent


@dataclass(slots=True)
class Backoff:
    """Exponential delays with equal jitter: half fixed, half random, capped at ``max_s``."""

    initial_s: float = 0.1
    max_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0

    def next_delay(self) -> float:
        """The wait before the next attempt; each call doubles the base up to the cap."""
        base = min(self.max_s, self.initial_s * (2 ** min(self.attempts, 32)))
        self.attempts += 1
        return base / 2 + self.rng.uniform(0, base / 2)

    def reset(self) -> None:
        """Start again from the initial delay (after a success)."""
        self.attempts = 0


@dataclass(slots=True)
class FeedLink:
    """The connection state machine of one feed subscription."""

    silence_limit_s: float
    backoff: Backoff = field(default_factory=Backoff)
    state: ConnectionState = ConnectionState.DISCONNECTED
    connected_once: bool = False
    drops: int = 0
    attempts: int = 0
    last_frame_at: float | None = None
    _attempt_at: float = 0.0
    _next_attempt_at: float = 0.0

    def poll(self, now: float) -> LinkAction:
        """What to do at monotonic time ``now``: connect, drop a silent feed, or nothing."""
        if self.state is ConnectionState.DISCONNECTED:
            return LinkAction.CONNECT if now >= self._next_attempt_at else LinkAction.NOTHING
        if self.state is ConnectionState.CONNECTED:
            if self.last_frame_at is not None and now - self.last_frame_at > self.silence_limit_s:
                self._lost(now)
                self.drops += 1
                return LinkAction.DROP
            return LinkAction.NOTHING
        # RECONNECTING: the attempt fails if nothing arrives within the silence limit.
        if now - self._attempt_at > self.silence_limit_s:
            self._lost(now)
            return LinkAction.DROP
        return LinkAction.NOTHING

    def connecting(self, now: float) -> None:
        """The service has just opened a new subscription."""
        self.state = ConnectionState.RECONNECTING
        self.attempts += 1
        self._attempt_at = now

    def frame_received(self, now: float) -> bool:
        """A frame (any, heartbeats included) arrived; True if this (re)establishes the link."""
        self.last_frame_at = now
        if self.state is ConnectionState.CONNECTED:
            return False
        self.state = ConnectionState.CONNECTED
        self.connected_once = True
        self.backoff.reset()
        return True

    def seconds_silent(self, now: float) -> float | None:
        """How long the feed has been quiet, or None before its first frame."""
        return None if self.last_frame_at is None else now - self.last_frame_at

    def _lost(self, now: float) -> None:
        self.state = ConnectionState.DISCONNECTED
        self._next_attempt_at = now + self.backoff.next_delay()
