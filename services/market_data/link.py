"""The feed link: one broker feed subscription driven by the shared connection state machine.

A thin use of ``services.broker.connection.ConnectionMonitor``: the service
tells the link when a frame arrived (with the monotonic time) and asks
``poll(now)`` what to do next. A feed that has said nothing, not even its
once-a-second ``sys.heartbeat.venue``, for ``silence_limit_s`` counts as
dropped even when the socket looks open (a ZeroMQ SUB socket never reports a
dead peer). After a drop the link waits the monitor's jittered, growing delay
before it asks for a new subscription (the monitor's ``connect`` step: a fresh
SUB socket subscribes to every feed topic again). A feed has nothing to
reconcile: the link is CONNECTED as soon as the new subscription delivers its
first frame.
Every change of state is kept in ``transitions`` for the service to publish.
"""

from __future__ import annotations

from enum import StrEnum

from services.broker.backoff import Backoff
from services.broker.base import ConnectionState
from services.broker.connection import ConnectionMonitor, ReconnectHooks, Transition, broker_backoff

__all__ = ["Backoff", "FeedLink", "LinkAction"]


class LinkAction(StrEnum):
    """What the service must do after ``FeedLink.poll``."""

    NOTHING = "nothing"
    CONNECT = "connect"  # open a new subscription and subscribe again
    DROP = "drop"  # close the subscription: the feed is silent


class FeedLink:
    """The connection state of one feed subscription."""

    def __init__(self, silence_limit_s: float, backoff: Backoff | None = None, start_grace_s: float = 0.0) -> None:
        self.monitor = ConnectionMonitor(ReconnectHooks(connect=self._ask_for_subscription),
                                         silence_limit_s=silence_limit_s,
                                         backoff=backoff if backoff is not None else broker_backoff(),
                                         start_grace_s=start_grace_s)
        self.transitions: list[Transition] = []  # not yet published by the service
        self._subscribe_asked = False

    @property
    def state(self) -> ConnectionState:
        """The feed's connection state."""
        return self.monitor.state

    @property
    def drops(self) -> int:
        """Times a live feed fell silent."""
        return self.monitor.drops

    @property
    def attempts(self) -> int:
        """Subscriptions opened so far."""
        return self.monitor.attempts

    def poll(self, now: float) -> LinkAction:
        """What to do at monotonic time ``now``: connect, drop a silent feed, or nothing."""
        before = self.monitor.state
        moves = self._advance(now)
        if self._subscribe_asked:
            self._subscribe_asked = False
            return LinkAction.CONNECT
        if before is not ConnectionState.DISCONNECTED and any(t.to_state is ConnectionState.DISCONNECTED for t in moves):
            return LinkAction.DROP
        return LinkAction.NOTHING

    def connecting(self, now: float) -> None:
        """The service has just opened the new subscription: the attempt's silence limit counts from here."""
        self.monitor.attempt_began(now)

    def frame_received(self, now: float) -> bool:
        """A frame (any, heartbeats included) arrived; True if this (re)establishes the link."""
        self.monitor.heard(now)
        if self.monitor.connected:
            return False
        # a frame while waiting to retry (an attempt given up a moment too soon): the feed is alive, go on now
        self.monitor.try_now(now)
        self._advance(now)
        if self.monitor.connected:
            self._subscribe_asked = False  # the subscription that delivered the frame serves; no new one
        return self.monitor.connected

    def starting(self, now: float) -> bool:
        """Never connected yet, within the start grace period: the venue may still be starting."""
        return self.monitor.starting(now)

    def seconds_silent(self, now: float) -> float | None:
        """How long the feed has been quiet, or None before its first frame."""
        return self.monitor.seconds_silent(now)

    def take_transitions(self) -> list[Transition]:
        """The changes of state since the last call, oldest first."""
        out, self.transitions = self.transitions, []
        return out

    def _advance(self, now: float) -> list[Transition]:
        moves = self.monitor.poll(now)
        self.transitions.extend(moves)
        return moves

    def _ask_for_subscription(self) -> str | None:
        self._subscribe_asked = True
        return None
